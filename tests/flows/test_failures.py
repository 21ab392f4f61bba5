"""Failures: retries with backoff, failure policies, timeouts, operator retry, cancel, pause."""

import pytest
from celery.result import AsyncResult

from approvals.models import ApprovalStatus
from approvals.services import approval_decide
from execution.models import ExecState
from execution.services import plan_cancel, plan_pause, plan_resume, subtask_retry
from execution.transitions import TransitionNotAllowed
from plans.models import Plan, PlanStatus, SubtaskStatus
from tests.support.factories import UserFactory, subtask
from tests.support.flows import event_types, finished, pending_approval, start, subtask_in, wait_for

pytestmark = pytest.mark.usefixtures("engine")


def statuses(plan):
    return dict(plan.subtasks.values_list("key", "status"))


def test_agent_errors_are_retried_until_success():
    plan = finished(start(subtask("flaky", input={"fail_times": 2, "result": "finally"}, max_retries=3)))
    assert plan.status == PlanStatus.COMPLETED
    flaky = plan.subtasks.get()
    assert (flaky.result, flaky.attempts, flaky.retries, flaky.error) == ("finally", 3, 2, "")
    retries = plan.events.filter(type="subtask.queued", payload__reason="retrying after an error")
    assert [event.payload["retry_in_s"] for event in retries] == [0.2, 0.4]
    assert "Scripted failure on attempt 1" in retries[0].payload["error"]


def test_exhausted_retries_fail_fast_cancels_what_has_not_started():
    plan = finished(
        start(
            subtask("broken", input={"fail_times": 5}, max_retries=1),
            subtask("slow", input={"sleep_ms": 1500}),
            subtask("after_slow", "slow"),
            subtask("after_broken", "broken"),
        )
    )
    assert plan.status == PlanStatus.FAILED
    assert plan.execution.state == ExecState.FAILED
    broken = plan.subtasks.get(key="broken")
    assert broken.attempts == 2
    assert "Scripted failure on attempt 2" in broken.error
    # The sibling already running finishes; nothing new starts.
    wait_for(lambda: Plan.objects.get(pk=plan.pk).subtasks.get(key="slow").status == SubtaskStatus.DONE)
    assert statuses(plan) == {
        "broken": "failed",
        "slow": "done",
        "after_slow": "cancelled",
        "after_broken": "cancelled",
    }
    assert event_types(plan).count("agent.execution.completed") == 1


def test_exhausted_retries_with_continue_skip_only_dependents():
    plan = finished(
        start(
            subtask("broken", input={"fail_times": 5}, max_retries=0),
            subtask("fine"),
            subtask("child", "broken"),
            subtask("grandchild", "child", "fine"),
            subtask("independent", "fine"),
            failure_policy="continue",
        )
    )
    assert plan.status == PlanStatus.FAILED
    assert statuses(plan) == {
        "broken": "failed",
        "fine": "done",
        "child": "skipped",
        "grandchild": "skipped",
        "independent": "done",
    }
    assert plan.subtasks.get(key="broken").attempts == 1


def test_a_subtask_past_its_timeout_fails():
    plan = finished(start(subtask("sleepy", input={"sleep_ms": 5000}, timeout_s=1, max_retries=0)))
    sleepy = plan.subtasks.get()
    assert sleepy.status == SubtaskStatus.FAILED
    assert sleepy.error == "Timed out after 1s."
    assert plan.status == PlanStatus.FAILED


def test_retry_after_failure_continues_the_plan():
    plan = finished(start(subtask("a"), subtask("b", "a", input={"fail_times": 1}, max_retries=0), subtask("c", "b")))
    assert statuses(plan) == {"a": "done", "b": "failed", "c": "cancelled"}

    subtask_retry(plan_id=plan.pk, key="b", actor="alice")
    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    assert statuses(plan) == {"a": "done", "b": "done", "c": "done"}
    b = plan.subtasks.get(key="b")
    assert b.attempts == 2
    assert plan.subtasks.get(key="a").attempts == 1
    assert "plan.retried" in event_types(plan)
    states = list(plan.execution.transitions.values_list("to_state", flat=True))
    assert states == ["running", "failed", "running", "completed"]


def test_only_failed_subtasks_can_be_retried():
    plan = finished(start(subtask("a")))
    with pytest.raises(TransitionNotAllowed) as caught:
        subtask_retry(plan_id=plan.pk, key="a", actor="alice")
    assert caught.value.current_status == "done"


def test_cancel_while_one_runs_and_another_waits():
    owner = UserFactory()
    plan = start(
        subtask("runs", input={"sleep_ms": 3000}),
        subtask("waits", input={"tool_calls": [{"tool": "deploy"}]}),
        subtask("later", "runs", "waits"),
        owner=owner,
    )
    approval = pending_approval(plan, "waits")
    running = subtask_in(plan, "runs", SubtaskStatus.RUNNING)

    plan_cancel(plan_id=plan.pk, actor="alice", reason="changed my mind")
    plan.refresh_from_db()
    assert plan.status == PlanStatus.CANCELLED
    assert plan.execution.state == ExecState.CANCELLED
    assert statuses(plan) == {"runs": "cancelled", "waits": "cancelled", "later": "cancelled"}
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.CANCELLED
    # The running task is terminated, and its end changes nothing.
    wait_for(lambda: AsyncResult(running.task_id).state == "REVOKED", timeout=15)
    assert statuses(plan) == {"runs": "cancelled", "waits": "cancelled", "later": "cancelled"}
    assert not plan.events.filter(type="subtask.completed").exists()
    with pytest.raises(TransitionNotAllowed):
        plan_cancel(plan_id=plan.pk, actor="alice")


def test_pause_stops_new_batches_and_resume_continues():
    owner = UserFactory()
    plan = start(
        subtask("first", input={"sleep_ms": 800}),
        subtask("asks", input={"tool_calls": [{"tool": "t"}]}),
        subtask("second", "first", "asks"),
        owner=owner,
    )
    subtask_in(plan, "first", SubtaskStatus.RUNNING)
    approval = pending_approval(plan, "asks")
    plan_pause(plan_id=plan.pk, actor="alice")

    # Running work finishes, and a decision is still recorded while paused.
    subtask_in(plan, "first", SubtaskStatus.DONE)
    approval_decide(approval_id=approval.pk, decided_by=owner, approve=True, result="ok")
    asks = subtask_in(plan, "asks", SubtaskStatus.QUEUED)
    assert asks.task_id == ""
    plan.refresh_from_db()
    assert plan.execution.state == ExecState.PAUSED
    assert plan.subtasks.get(key="second").status == SubtaskStatus.PENDING
    with pytest.raises(TransitionNotAllowed):
        plan_pause(plan_id=plan.pk, actor="alice")

    plan_resume(plan_id=plan.pk, actor="alice")
    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    assert plan.subtasks.get(key="asks").result == {"result": "asks: done", "tool_results": ["ok"]}
    assert plan.subtasks.get(key="first").attempts == 1
