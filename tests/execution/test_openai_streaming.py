"""Streamed model calls: the assembler, the agent against the fake server's wire format, and the live text."""

import json

import psycopg
import pytest
from django.db import connection

from execution.agents import openai as openai_agent
from execution.agents.base import AgentError, Finish, ToolCalls
from execution.agents.definitions import agent_from_definition
from execution.agents.openai_stream import StreamAssembler, completion_from_stream
from execution.deltas import DELTA_CHANNEL, DeltaPublisher
from tests.fakes.openai_server import completion, reply, stream_chunks, tool_call
from tests.support.agent_contexts import LOGIN, TOOLS, context

ENDPOINT = "POST http://model/v1/chat/completions"


def streamed(body, *, chunk_chars=3, usage=True):
    """Return a completion's chunks as the fake server sends them, read back as the client's dicts."""
    return json.loads(json.dumps(stream_chunks(body, {"chunk_chars": chunk_chars}, usage)))


class Recorder:
    """Stands in for the live publisher: keeps (step, text) as the agent hands it on."""

    def __init__(self):
        self.texts = []
        self.step = None

    def start(self, step):
        self.step = step

    def add(self, text):
        self.texts.append((self.step, text))

    def flush(self):
        pass


@pytest.fixture
def live(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(openai_agent, "delta_publisher", lambda context: recorder)
    return recorder


# --- the assembler ------------------------------------------------------------------------


def test_text_deltas_join_into_the_answer_with_the_usage_of_the_last_chunk():
    body = completion("The login screen is written.", prompt_tokens=30, completion_tokens=9)
    texts = []

    assembled = completion_from_stream(streamed(body), on_text=texts.append, endpoint=ENDPOINT)

    assert "".join(texts) == "The login screen is written."
    assert len(texts) > 1
    assert assembled["choices"][0]["message"] == {"role": "assistant", "content": "The login screen is written."}
    assert assembled["usage"] == body["usage"]
    assert assembled["model"] == body["model"]


def test_tool_calls_are_assembled_from_their_pieces_exactly_as_the_unstreamed_answer():
    calls = [tool_call("write_file", LOGIN, id="call_a"), tool_call("run_command", {"command": "make"}, id="call_b")]
    body = completion(tool_calls=calls)

    assembled = completion_from_stream(streamed(body, chunk_chars=2), on_text=lambda text: None, endpoint=ENDPOINT)

    assert assembled["choices"][0]["message"] == body["choices"][0]["message"]
    assert assembled["choices"][0]["finish_reason"] == "tool_calls"


def test_pieces_of_two_calls_may_interleave_and_a_call_without_an_id_gets_none():
    assembler = StreamAssembler()
    chunk = {"model": "m", "choices": [{"index": 0, "delta": {"tool_calls": []}, "finish_reason": None}]}
    pieces = [
        {"index": 0, "function": {"name": "a", "arguments": '{"x"'}},
        {"index": 1, "id": "call_b", "function": {"name": "b", "arguments": "{}"}},
        {"index": 0, "function": {"arguments": ": 1}"}},
    ]
    for piece in pieces:
        assembler.add({**chunk, "choices": [{"index": 0, "delta": {"tool_calls": [piece]}}]})
    assembler.add({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})

    message = assembler.completion()["choices"][0]["message"]
    assert message["content"] is None
    assert [
        (call["id"], call["function"]["name"], call["function"]["arguments"]) for call in message["tool_calls"]
    ] == [
        (None, "a", '{"x": 1}'),
        ("call_b", "b", "{}"),
    ]


def test_a_stream_that_ends_before_the_answer_finished_is_an_agent_error():
    chunks = streamed(completion("A long answer that is cut"))
    cut = [chunk for chunk in chunks if not chunk["choices"] or not chunk["choices"][0]["finish_reason"]]
    cut = [chunk for chunk in cut if chunk["choices"]]  # neither the finish nor the usage arrives

    with pytest.raises(AgentError, match="before the answer was finished"):
        completion_from_stream(cut, on_text=lambda text: None, endpoint=ENDPOINT)


# --- the agent against the fake server ------------------------------------------------------


def test_a_streamed_run_returns_exactly_what_an_unstreamed_run_returns(fake_openai, live):
    answer = completion(
        tool_calls=[tool_call("write_file", LOGIN, id="c1"), tool_call("run_command", {"command": "ls"}, id="c2")]
    )
    streaming = agent_from_definition("coder", fake_openai.agent_definition(tools=TOOLS))
    plain = agent_from_definition("coder", fake_openai.agent_definition(tools=TOOLS, stream=False))
    fake_openai.script(answer, answer)

    first, second = streaming.run(context()), plain.run(context())

    assert isinstance(first, ToolCalls)
    assert first == second
    assert [call.call_id for call in first.calls] == ["c1", "c2"]


def test_the_text_goes_live_as_it_arrives_tagged_with_the_step(fake_openai, live):
    agent = agent_from_definition("ask", fake_openai.agent_definition())
    fake_openai.script(reply(completion("Twelve words of an answer arriving in little pieces."), chunk_chars=5))

    step = agent.run(context())

    assert isinstance(step, Finish)
    assert {number for number, _ in live.texts} == {0}
    assert "".join(text for _, text in live.texts) == step.result["content"]
    assert len(live.texts) > 1


def test_stream_false_sends_no_stream_parameter(fake_openai, live):
    agent = agent_from_definition("ask", fake_openai.agent_definition(stream=False))
    fake_openai.script(completion("Yes"))

    step = agent.run(context())

    body = fake_openai.requests()[0]["body"]
    assert "stream" not in body
    assert "stream_options" not in body
    assert step.result["content"] == "Yes"
    assert live.texts == []


def test_a_stream_cut_mid_answer_is_an_agent_error(fake_openai, live):
    agent = agent_from_definition("ask", fake_openai.agent_definition())
    fake_openai.script(reply(completion("An answer that never finishes arriving."), chunk_chars=4, cut_after=3))

    with pytest.raises(AgentError, match="before the answer was finished"):
        agent.run(context())


def test_an_error_event_mid_stream_is_an_agent_error(fake_openai, live):
    agent = agent_from_definition("ask", fake_openai.agent_definition())
    fake_openai.script(reply(completion("An answer the server gives up on."), chunk_chars=4, error_after=3))

    with pytest.raises(AgentError, match=r"broke off its stream: .*overloaded"):
        agent.run(context())


def test_a_server_that_ignores_stream_is_read_as_an_unstreamed_answer(fake_openai, live):
    agent = agent_from_definition("ask", fake_openai.agent_definition())
    fake_openai.script(reply(json.dumps(completion("Whole")), headers={"Content-Type": "application/json"}))

    step = agent.run(context())

    assert step.result["content"] == "Whole"
    assert live.texts == [(0, "Whole")]


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_stream_must_be_true_or_false(fake_openai, value):
    definition = {**fake_openai.agent_definition(), "stream": value}
    if value is None:
        assert agent_from_definition("ask", definition).stream is True
    else:
        with pytest.raises(ValueError, match='"stream" must be true or false'):
            agent_from_definition("ask", definition)


# --- the live publisher --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_publisher_coalesces_pieces_and_notifies_them_in_order():
    params = {k: v for k, v in connection.get_connection_params().items() if k not in ("cursor_factory", "context")}
    with psycopg.connect(**params, autocommit=True) as listener:
        listener.execute(f"LISTEN {DELTA_CHANNEL}")
        publisher = DeltaPublisher(plan_id="p", subtask_id="s", subtask_key="k", interval_s=60)
        publisher.start(0)
        for piece in ("a", "b", "c"):
            publisher.add(piece)
        publisher.start(1)
        publisher.add("d")
        publisher.flush()
        received = [json.loads(notify.payload) for notify in listener.notifies(timeout=5, stop_after=3)]

    assert [(item["step"], item["delta"]) for item in received] == [(0, "a"), (0, "bc"), (1, "d")]
    assert received[0] == {"plan_id": "p", "subtask_id": "s", "subtask_key": "k", "step": 0, "delta": "a"}
