"""Streamed model answers and structured output through real workers, the live event stream and the fake model."""

import contextlib
import json
import queue
import threading
from typing import Any

import httpx
import pytest

from approvals.models import ApprovalStatus
from common.text import printable
from plans.models import Plan, PlanStatus, SubtaskStatus
from tests.cli.test_command import plan_file, run
from tests.fakes.openai_server import completion, reply, tool_call
from tests.support.factories import UserFactory, plan_data, subtask
from tests.support.flows import finished, start, wait_for

pytestmark = pytest.mark.usefixtures("engine")

STORY = "Once upon a time a worker streamed an answer, piece by piece, to a client that read every word of it."


@pytest.fixture
def llm(fake_openai, test_agents, settings):
    """The fake model, reset, with the test agents known to this process too (plans are checked where submitted)."""
    settings.EXECUTION_AGENTS_FILE = str(test_agents.path)
    return fake_openai


class EventReader:
    """Reads a plan's Server-Sent Events in a thread, every message in arrival order (with its id, if any)."""

    def __init__(self, client: httpx.Client, path: str) -> None:
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.opened: queue.Queue[int] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(client, path), daemon=True)
        self._thread.start()
        assert self.opened.get(timeout=10) == 200

    def _read(self, client: httpx.Client, path: str) -> None:
        # The web server stops at the end of the session, cutting the stream: that ends the reading.
        with contextlib.suppress(httpx.HTTPError):
            self._read_messages(client, path)

    def _read_messages(self, client: httpx.Client, path: str) -> None:
        with client.stream("GET", path, headers={"Accept": "text/event-stream"}, timeout=None) as response:
            self.opened.put(response.status_code)
            message: dict[str, str] = {}
            for line in response.iter_lines():
                if not line:
                    if "data" in message:
                        self.messages.put({**message, "data": json.loads(message["data"])})
                    message = {}
                elif not line.startswith(":"):
                    field, _, value = line.partition(":")
                    message[field] = value.removeprefix(" ")

    def until(self, event: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Return the messages up to and including the first `event`."""
        seen = []
        while True:
            message = self.messages.get(timeout=timeout)
            seen.append(message)
            if message.get("event") == event:
                return seen


def api_client(web) -> httpx.Client:
    UserFactory(username="watcher", password="watcher-password-1")
    client = httpx.Client(base_url=web.url, timeout=15)
    token = client.post("/api/v1/auth/token/", json={"username": "watcher", "password": "watcher-password-1"})
    client.headers["Authorization"] = f"Token {token.json()['token']}"
    return client


def test_the_answers_text_arrives_on_the_live_stream_in_order_before_the_subtask_completes(llm, web):
    read = tool_call("read_file", {"path": "notes.txt"}, id="call_read")
    llm.script(
        reply(completion("Let me read the notes first.", tool_calls=[read]), chunk_chars=3, chunk_delay_s=0.02),
        reply(completion(STORY), chunk_chars=3, chunk_delay_s=0.01),
        match="Tell a story",
    )
    client = api_client(web)
    created = client.post("/api/v1/plans/", json=plan_data(subtask("story", agent="llm", description="Tell a story")))
    plan_id = created.json()["id"]
    events = EventReader(client, f"/api/v1/plans/{plan_id}/events/")

    assert client.post(f"/api/v1/plans/{plan_id}/approve/").status_code == 200
    messages = events.until("subtask.completed")

    deltas = [message for message in messages if message["event"] == "agent.message.delta"]
    assert deltas, "no delta arrived before subtask.completed"
    assert all("id" not in message for message in deltas)
    assert all("id" in message for message in messages if message["event"] != "agent.message.delta")
    assert {tuple(sorted(message["data"])) for message in deltas} == {
        ("delta", "plan_id", "step", "subtask_id", "subtask_key")
    }
    texts: dict[int, str] = {}
    for message in deltas:
        assert message["data"]["plan_id"] == plan_id
        assert message["data"]["subtask_key"] == "story"
        texts[message["data"]["step"]] = texts.get(message["data"]["step"], "") + message["data"]["delta"]
    subtask_row = finished_plan(plan_id).subtasks.get()
    answers = [message["content"] for message in subtask_row.conversation if message["role"] == "assistant"]
    assert texts == {0: answers[0], 1: answers[1]}
    assert answers[1] == STORY == subtask_row.result["content"]
    # Fewer messages than chunks: the pieces are coalesced.
    assert len([d for d in deltas if d["data"]["step"] == 1]) < len(STORY) / 3

    stored = client.get(f"/api/v1/plans/{plan_id}/events/").json()
    listed = stored["results"] if isinstance(stored, dict) else stored
    assert "agent.message.delta" not in {event["type"] for event in listed}


def finished_plan(plan_id: str) -> Plan:
    return finished(Plan.objects.get(pk=plan_id))


def test_a_streamed_answer_with_two_tool_calls_asks_for_the_same_approvals_as_an_unstreamed_one(llm):
    def answer():
        return completion(
            tool_calls=[
                tool_call("write_file", {"path": "a.txt", "content": "a"}, id="call_a"),
                tool_call("write_file", {"path": "b.txt", "content": "b"}, id="call_b"),
            ]
        )

    llm.script(reply(answer(), chunk_chars=2), match="Streamed pair")
    llm.script(answer(), match="Plain pair")
    plan = start(
        subtask("streamed", agent="llm", description="Streamed pair"),
        subtask("plain", agent="llm_plain", description="Plain pair"),
    )

    wait_for(lambda: plan.approvals.filter(status=ApprovalStatus.PENDING).count() == 4)
    approvals = {
        key: list(
            plan.approvals.filter(subtask__key=key)
            .order_by("call_index")
            .values_list("tool", "arguments", "call_index")
        )
        for key in ("streamed", "plain")
    }
    assert approvals["streamed"] == approvals["plain"]
    assert [arguments["path"] for _, arguments, _ in approvals["streamed"]] == ["a.txt", "b.txt"]
    [streamed], [plain] = llm.requests(match="Streamed pair"), llm.requests(match="Plain pair")
    assert streamed["body"]["stream"] is True
    assert streamed["body"]["stream_options"] == {"include_usage": True}
    assert "stream" not in plain["body"]
    assert "stream_options" not in plain["body"]
    conversations = {row.key: row.conversation for row in plan.subtasks.all()}
    assert conversations["streamed"][-1] == conversations["plain"][-1]
    assert [call["id"] for call in conversations["streamed"][-1]["tool_calls"]] == ["call_a", "call_b"]


def test_a_stream_cut_mid_answer_is_retried_and_only_the_completed_answer_is_kept(llm):
    llm.script(
        reply(completion("This answer breaks off half way"), chunk_chars=4, cut_after=4),
        completion("This answer arrives whole."),
        match="Survive a cut",
    )
    plan = finished(start(subtask("cut", agent="llm", description="Survive a cut")))

    assert plan.status == PlanStatus.COMPLETED
    cut = plan.subtasks.get()
    assert cut.attempts == 2
    assert cut.result["content"] == "This answer arrives whole."
    assert [message for message in cut.conversation if message["role"] == "assistant"] == [
        {"role": "assistant", "content": "This answer arrives whole."}
    ]
    assert len(llm.requests(match="Survive a cut")) == 2


def test_structured_answers_are_checked_corrected_once_and_failed_saying_why(llm):
    llm.script(completion('{"verdict": "ok"}'), match="Valid at once")
    llm.script(completion("ok!"), completion('{"verdict": "fix"}'), match="Valid after a correction")
    llm.script(completion('{"verdict": 1}'), completion('{"verdict": "maybe"}'), match="Never valid")
    plan = finished(
        start(
            subtask("once", agent="llm_structured", description="Valid at once"),
            subtask("corrected", agent="llm_structured", description="Valid after a correction"),
            subtask("never", agent="llm_structured", description="Never valid"),
            failure_policy="continue",
        )
    )

    rows = {row.key: row for row in plan.subtasks.all()}
    assert rows["once"].status == SubtaskStatus.DONE
    assert rows["once"].result["output"] == {"verdict": "ok"}
    assert rows["once"].result["steps"] == 1
    assert rows["corrected"].status == SubtaskStatus.DONE
    assert rows["corrected"].result["output"] == {"verdict": "fix"}
    assert rows["corrected"].result["steps"] == 2
    assert rows["never"].status == SubtaskStatus.FAILED
    assert "does not match output_schema" in rows["never"].error
    assert "'maybe' is not one of" in rows["never"].error
    assert len(llm.requests(match="Never valid")) == 2


def test_plans_watch_shows_the_answer_as_it_arrives_escaped(llm, tmp_path):
    UserFactory(username="dev")
    answer = "Hello \x1b[31mred\x1b[0m world,\nstreamed to a terminal that must not turn red."
    llm.script(reply(completion(answer), delay_s=1, chunk_chars=4, chunk_delay_s=0.02), match="Speak up")
    path = plan_file(tmp_path, plan_data(subtask("speak", agent="llm", description="Speak up")))

    code, output = run("submit", path, "--approve", "--watch", "--no-input", "--user", "dev")

    assert code == 0, output
    assert "\x1b" not in output
    pieces = [line.removeprefix("speak > ") for line in output.splitlines() if line.startswith("speak > ")]
    assert "".join(pieces) == printable(answer, multiline=False)
