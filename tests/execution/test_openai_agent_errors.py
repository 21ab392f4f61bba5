"""The openai agent's failures, retries and secrets, with the real openai client against the fake server."""

import json
import logging
import socket

import pytest

from execution.agents.base import AgentError, Fail
from execution.agents.definitions import agent_from_definition
from tests.fakes.openai_server import completion, reply, tool_call
from tests.support.agent_contexts import READ_FILE, TOOLS, approved, context, resumed


@pytest.fixture
def coder(fake_openai):
    return agent_from_definition("coder", fake_openai.agent_definition(tools=TOOLS))


def test_a_429_is_an_agent_error_carrying_retry_after(coder, fake_openai):
    fake_openai.script(reply({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "7"}))
    with pytest.raises(AgentError, match="429") as raised:
        coder.run(context())
    assert raised.value.retry_after == 7.0


def test_a_server_error_is_an_agent_error(coder, fake_openai):
    fake_openai.script(reply({"error": {"message": "model crashed"}}, status=500))
    with pytest.raises(AgentError, match="500"):
        coder.run(context())


def test_a_timeout_is_an_agent_error(fake_openai):
    agent = agent_from_definition("slow", fake_openai.agent_definition(timeout_s=0.5))
    fake_openai.script(reply(completion("late"), delay_s=3))
    with pytest.raises(AgentError, match="timed out"):
        agent.run(context())


def test_an_unreachable_server_is_an_agent_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    agent = agent_from_definition("gone", {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m"})
    with pytest.raises(AgentError, match="failed"):
        agent.run(context())


def test_a_client_error_fails_the_subtask_with_the_status_and_the_body(coder, fake_openai):
    fake_openai.script(reply({"error": {"message": "model 'fake-model' not found"}}, status=404))
    step = coder.run(context())
    assert isinstance(step, Fail)
    assert "404" in step.error
    assert "not found" in step.error


@pytest.mark.parametrize("body", [{"hello": "world"}, "<html>a proxy page</html>", {"choices": []}])
def test_an_answer_that_is_not_a_chat_completion_fails_the_subtask(coder, fake_openai, body):
    fake_openai.script(reply(body))
    step = coder.run(context())
    assert isinstance(step, Fail)
    assert "not a chat completion" in step.error


def test_more_than_max_steps_model_calls_fail_the_subtask(fake_openai, settings, tmp_path):
    settings.EXECUTION_WORKSPACE_DIR = str(tmp_path)
    agent = agent_from_definition("loop", fake_openai.agent_definition(tools=[READ_FILE], max_steps=3))
    fake_openai.script(*[completion(tool_calls=[tool_call("read_file", {"path": "x"})]) for _ in range(5)])

    step = agent.run(context())

    assert isinstance(step, Fail)
    assert "max_steps=3" in step.error
    assert len(fake_openai.requests()) == 3
    assert len(step.usage["steps"]) == 3


def test_the_api_key_goes_into_the_request_and_nowhere_else(fake_openai, monkeypatch):
    key = "sk-test-0123456789abcdef"
    monkeypatch.setenv("FAKE_OPENAI_KEY", key)
    agent = agent_from_definition("hosted", fake_openai.agent_definition(api_key_env="FAKE_OPENAI_KEY", tools=TOOLS))
    fake_openai.script(
        completion(tool_calls=[tool_call("run_command", {"command": "ls"})]),
        reply({"error": {"message": f"Incorrect API key provided: {key}"}}, status=401),
        reply({"error": {"message": f"overloaded ({key})"}}, status=503),
    )
    first = context()
    step = agent.run(first)
    failed = agent.run(resumed(first, step, approved(result="lib")))
    with pytest.raises(AgentError) as raised:
        agent.run(first)

    assert fake_openai.requests()[0]["headers"]["authorization"] == f"Bearer {key}"
    assert isinstance(failed, Fail)
    assert "401" in failed.error
    for text in (failed.error, str(raised.value), json.dumps(failed.conversation), json.dumps(failed.usage)):
        assert key not in text
    assert key not in agent.description
    assert key not in repr(agent)
    assert key not in repr(vars(agent))


def test_the_api_key_stays_out_of_the_logs_even_at_debug_level(fake_openai, monkeypatch, caplog):
    key = "sk-test-logged-nowhere"
    monkeypatch.setenv("FAKE_OPENAI_KEY", key)
    agent = agent_from_definition("hosted", fake_openai.agent_definition(api_key_env="FAKE_OPENAI_KEY"))
    fake_openai.script(completion("hi"), reply({"error": {"message": "down"}}, status=502))
    caplog.set_level(logging.DEBUG)

    agent.run(context())
    with pytest.raises(AgentError):
        agent.run(context())

    assert "chat/completions" in caplog.text
    assert key not in caplog.text


def test_a_missing_api_key_fails_naming_the_variable(fake_openai, monkeypatch):
    monkeypatch.delenv("FAKE_OPENAI_KEY", raising=False)
    agent = agent_from_definition("hosted", fake_openai.agent_definition(api_key_env="FAKE_OPENAI_KEY"))
    step = agent.run(context())
    assert isinstance(step, Fail)
    assert "FAKE_OPENAI_KEY" in step.error
    assert fake_openai.requests() == []


def test_local_servers_get_a_placeholder_key_never_openai_api_key(fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-hosted-key-for-another-service")
    agent = agent_from_definition("local", fake_openai.agent_definition())
    fake_openai.script(completion("hi"))
    agent.run(context())
    assert "sk-hosted" not in fake_openai.requests()[0]["headers"]["authorization"]


def test_parallel_subtasks_get_their_own_scripted_answers(fake_openai):
    agent = agent_from_definition("ask", fake_openai.agent_definition())
    fake_openai.script(completion("about login"), match="Explain the login screen")
    fake_openai.script(completion("about tests"), match="Explain the tests")

    tests_step = agent.run(context(description="Explain the tests"))
    login_step = agent.run(context(description="Explain the login screen"))

    assert (login_step.result["content"], tests_step.result["content"]) == ("about login", "about tests")
    assert [request["match"] for request in fake_openai.requests()] == ["Explain the tests", "Explain the login screen"]


def test_a_script_may_be_chosen_by_the_model_name(fake_openai):
    fake_openai.script(completion("from the big model", model="big-model"), match="big-model")
    fake_openai.script(completion("from anyone"))
    big = agent_from_definition("big", fake_openai.agent_definition(model="big-model"))
    small = agent_from_definition("small", fake_openai.agent_definition())

    assert small.run(context()).result["content"] == "from anyone"
    assert big.run(context()).result == {
        "content": "from the big model",
        "model": "big-model",
        "steps": 1,
        "usage": {"prompt_tokens": 11, "completion_tokens": 7},
    }
