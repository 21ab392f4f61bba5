"""Language-model agents through real workers: tool calls paused for people, resumed with their outcome."""

import json
import os
import signal

import pytest

from approvals.models import ApprovalStatus
from approvals.services import approval_decide
from plans.models import PlanStatus, SubtaskStatus
from tests.fakes.openai_server import MODEL, completion, reply, tool_call
from tests.support.factories import subtask
from tests.support.flows import finished, pending_approval, start, subtask_in, wait_for

pytestmark = pytest.mark.usefixtures("engine")


@pytest.fixture
def llm(fake_openai, test_agents, settings):
    """The fake model, reset, with the test agents known to this process too (plans are checked where submitted)."""
    settings.EXECUTION_AGENTS_FILE = str(test_agents.path)
    return fake_openai


def tool_messages(request: dict) -> list[dict]:
    return [message for message in request["body"]["messages"] if message["role"] == "tool"]


def test_an_approved_tool_call_reaches_the_model_with_its_result_and_the_answer_completes_the_plan(llm):
    write = tool_call("write_file", {"path": "hello.txt", "content": "hi"}, id="call_w1")
    llm.script(completion(tool_calls=[write]), completion("Wrote hello.txt."), match="Write the greeting")
    plan = start(subtask("greet", agent="llm", description="Write the greeting"), goal="Say hello")

    approval = pending_approval(plan, "greet")
    assert (approval.tool, approval.arguments) == ("write_file", {"path": "hello.txt", "content": "hi"})
    approval_decide(approval_id=approval.pk, decided_by=approval.plan.owner, approve=True, result={"written": 2})

    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    greet = plan.subtasks.get()
    assert greet.result == {
        "content": "Wrote hello.txt.",
        "model": MODEL,
        "steps": 2,
        "usage": {"prompt_tokens": 22, "completion_tokens": 14},
    }
    first, second = llm.requests(match="Write the greeting")
    opening = next(message for message in first["body"]["messages"] if message["role"] == "user")
    assert "Say hello" in opening["content"]
    assert "Write the greeting" in opening["content"]
    [answer] = tool_messages(second)
    assert answer["tool_call_id"] == "call_w1"
    assert json.loads(answer["content"]) == {"written": 2}
    assert [message["role"] for message in greet.conversation] == ["system", "user", "assistant", "tool", "assistant"]
    assert greet.usage["prompt_tokens"] == 22


def test_a_rejected_tool_call_reaches_the_model_with_the_reason_and_its_next_answer_decides(llm):
    write = tool_call("write_file", {"path": "/etc/passwd", "content": "x"}, id="call_bad")
    llm.script(completion(tool_calls=[write]), completion("Understood, I left it alone."), match="Risky write")
    plan = start(subtask("risky", agent="llm", description="Risky write"))

    approval = pending_approval(plan, "risky")
    approval_decide(approval_id=approval.pk, decided_by=approval.plan.owner, approve=False, reason="not that file")

    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    assert plan.subtasks.get().result["content"] == "Understood, I left it alone."
    [answer] = tool_messages(llm.requests(match="Risky write")[1])
    assert answer["tool_call_id"] == "call_bad"
    assert "rejected" in answer["content"]
    assert "not that file" in answer["content"]


def test_two_tool_calls_in_one_answer_wait_for_both_decisions_and_the_model_is_called_once_more(llm):
    calls = [
        tool_call("write_file", {"path": "a.txt", "content": "a"}, id="call_a"),
        tool_call("write_file", {"path": "b.txt", "content": "b"}, id="call_b"),
    ]
    llm.script(completion(tool_calls=calls), completion("Both written."), match="Two files")
    plan = start(subtask("pair", agent="llm", description="Two files"))

    wait_for(lambda: plan.approvals.filter(status=ApprovalStatus.PENDING).count() == 2)
    first, second = plan.approvals.filter(status=ApprovalStatus.PENDING).order_by("call_index")
    approver = plan.owner
    approval_decide(approval_id=first.pk, decided_by=approver, approve=True, result="a done")
    assert plan.subtasks.get().status == SubtaskStatus.WAITING_APPROVAL
    assert len(llm.requests(match="Two files")) == 1
    approval_decide(approval_id=second.pk, decided_by=approver, approve=False, reason="not b")

    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    requests = llm.requests(match="Two files")
    assert len(requests) == 2
    answers = tool_messages(requests[1])
    assert [answer["tool_call_id"] for answer in answers] == ["call_a", "call_b"]
    assert answers[0]["content"] == "a done"
    assert "rejected" in answers[1]["content"]
    assert "not b" in answers[1]["content"]


def test_a_worker_tool_runs_without_approval_inside_the_workspace_and_a_path_outside_is_refused(llm):
    llm.script(
        completion(tool_calls=[tool_call("read_file", {"path": "notes.txt"}, id="call_in")]),
        completion(tool_calls=[tool_call("read_file", {"path": "../secret.txt"}, id="call_out")]),
        completion("The notes say to remember the milk."),
        match="Read the notes",
    )
    plan = finished(start(subtask("read", agent="llm", description="Read the notes")))

    assert plan.status == PlanStatus.COMPLETED
    assert not plan.approvals.exists()
    requests = llm.requests(match="Read the notes")
    inside = tool_messages(requests[1])[-1]
    assert inside["tool_call_id"] == "call_in"
    assert "Remember the milk." in inside["content"]
    outside = tool_messages(requests[2])[-1]
    assert outside["tool_call_id"] == "call_out"
    assert "not for models" not in outside["content"]
    assert outside["content"].startswith("Error:")


def test_a_worker_killed_after_the_decision_loses_nothing_the_resumed_run_sends_the_whole_conversation(llm):
    write = tool_call("write_file", {"path": "x.txt", "content": "x"}, id="call_x")
    llm.script(
        completion(tool_calls=[write]),
        # The resumed run waits for this answer long enough to be killed.
        reply(completion("too late"), delay_s=30),
        completion("Done after all."),
        match="Survive a crash",
    )
    plan = start(subtask("crash", agent="llm", description="Survive a crash"))
    approval = pending_approval(plan, "crash")
    approval_decide(approval_id=approval.pk, decided_by=approval.plan.owner, approve=True, result="ok")
    wait_for(lambda: len(llm.requests(match="Survive a crash")) == 2, timeout=30)
    running = subtask_in(plan, "crash", SubtaskStatus.RUNNING)

    os.kill(int(running.worker.rsplit(":", 1)[1]), signal.SIGKILL)

    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    assert plan.subtasks.get().result["content"] == "Done after all."
    resumed, again = llm.requests(match="Survive a crash")[1:]
    assert again["body"]["messages"] == resumed["body"]["messages"]
    assert [message["role"] for message in again["body"]["messages"]] == ["system", "user", "assistant", "tool"]


def test_rate_limits_server_errors_and_timeouts_are_retried_with_backoff(llm):
    llm.script(
        reply({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "1"}),
        reply({"error": {"message": "boom"}}, status=500),
        reply(completion("late"), delay_s=4),  # past the agent's 2 s timeout
        completion("Finally."),
        match="Flaky model",
    )
    plan = finished(start(subtask("flaky", agent="llm", description="Flaky model", max_retries=3)), timeout=90)

    assert plan.status == PlanStatus.COMPLETED
    flaky = plan.subtasks.get()
    assert (flaky.result["content"], flaky.attempts) == ("Finally.", 4)
    retries = plan.events.filter(type="subtask.queued", payload__reason="retrying after an error")
    first_retry = retries.order_by("seq").first()
    assert first_retry is not None
    assert first_retry.payload["retry_in_s"] >= 1
    assert "429" in first_retry.payload["error"]


def test_malformed_arguments_are_answered_to_the_model_without_asking_anyone(llm):
    llm.script(
        completion(tool_calls=[tool_call("write_file", "{not json", id="call_1")]),
        completion(tool_calls=[tool_call("write_file", {"path": "a.txt"}, id="call_2")]),
        completion("I could not write it."),
        match="Sloppy arguments",
    )
    plan = finished(start(subtask("sloppy", agent="llm", description="Sloppy arguments")))

    assert plan.status == PlanStatus.COMPLETED
    assert not plan.approvals.exists()
    requests = llm.requests(match="Sloppy arguments")
    assert tool_messages(requests[1])[-1]["content"].startswith("Error:")
    assert "content" in tool_messages(requests[2])[-1]["content"]


def test_more_model_calls_than_max_steps_fail_the_subtask_saying_so(llm):
    read = completion(tool_calls=[tool_call("read_file", {"path": "notes.txt"})])
    llm.script(read, read, read, match="Endless reading")
    plan = finished(start(subtask("endless", agent="llm_short", description="Endless reading", max_retries=0)))

    assert plan.status == PlanStatus.FAILED
    endless = plan.subtasks.get()
    assert endless.status == SubtaskStatus.FAILED
    assert "max_steps" in endless.error
    assert len(llm.requests(match="Endless reading")) == 2


def test_the_example_http_agent_service_completes_a_plan_with_one_approval(llm):
    plan = start(subtask("note", agent="helper", description="Leave a note", input={"path": "note.txt"}))
    approval = pending_approval(plan, "note")
    assert (approval.tool, approval.arguments["path"]) == ("write_file", "note.txt")
    approval_decide(approval_id=approval.pk, decided_by=approval.plan.owner, approve=True, result="saved")

    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    assert plan.subtasks.get().result == {"written": "note.txt", "tool_result": "saved"}
