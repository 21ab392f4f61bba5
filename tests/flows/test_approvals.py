"""Human approvals: plans and tool calls pause without holding a worker, decisions resume them."""

import json
import signal
import threading
from datetime import timedelta

import pytest
import redis
from celery import current_app
from django.conf import settings
from django.db import connection
from django.utils import timezone

from approvals.errors import AlreadyDecided
from approvals.models import Approval, ApprovalStatus
from approvals.services import approval_decide, plan_approve
from execution.models import ExecState, ExecutionState
from execution.services import plan_submit
from plans.models import PlanStatus, SubtaskStatus
from tests.support.cluster import holding_nothing
from tests.support.factories import UserFactory, plan_data, subtask
from tests.support.flows import event_types, finished, pending_approval, start, subtask_in, wait_for

pytestmark = pytest.mark.usefixtures("engine")

TWO_TOOLS = {
    "result": "patched",
    "tool_calls": [
        {"tool": "read_file", "arguments": {"path": "main.dart"}},
        {"tool": "write_file", "arguments": {"path": "main.dart", "content": "void main() {}"}},
    ],
}


def test_plan_waits_in_draft_until_approved_then_runs():
    owner = UserFactory()
    plan = plan_submit(owner=owner, data=plan_data(subtask("a"), subtask("b", "a")))
    assert plan.status == PlanStatus.DRAFT
    approval = Approval.objects.get(plan=plan)
    assert (approval.kind, approval.status, approval.subtask) == ("plan", "pending", None)

    plan_approve(plan_id=plan.pk, user=owner)
    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by) == ("approved", owner)
    assert event_types(plan)[:5] == [
        "plan.created",
        "approval.requested",
        "approval.voted",
        "approval.resolved",
        "plan.approved",
    ]


def test_tool_calls_pause_the_subtask_and_their_results_reach_the_final_result():
    owner = UserFactory()
    plan = start(subtask("edit", input=TWO_TOOLS), subtask("after", "edit", input={"echo": True}), owner=owner)

    first = pending_approval(plan, "edit")
    waiting = subtask_in(plan, "edit", SubtaskStatus.WAITING_APPROVAL)
    assert (first.tool, first.arguments, first.call_index) == ("read_file", {"path": "main.dart"}, 0)
    assert waiting.tool_calls[0]["status"] == "pending"
    plan.refresh_from_db()
    assert plan.execution.state == ExecState.WAITING_APPROVAL
    assert plan.subtasks.get(key="after").status == SubtaskStatus.PENDING

    approval_decide(approval_id=first.pk, decided_by=owner, approve=True, result={"content": "old"})
    second = pending_approval(plan, "edit")
    assert second.tool == "write_file"
    approval_decide(
        approval_id=second.pk, decided_by=owner, approve=True, arguments={"path": "lib/main.dart"}, result="written"
    )

    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    edit = plan.subtasks.get(key="edit")
    assert edit.result == {"result": "patched", "tool_results": [{"content": "old"}, "written"]}
    assert [call["status"] for call in edit.tool_calls] == ["approved", "approved"]
    assert edit.tool_calls[1]["approved_arguments"] == {"path": "lib/main.dart"}
    context = plan.subtasks.get(key="after").result
    assert context["dependencies"]["edit"]["result"]["tool_results"] == [{"content": "old"}, "written"]
    states = list(plan.execution.transitions.values_list("to_state", flat=True))
    assert states[:4] == ["running", "waiting_approval", "resumed", "running"]
    assert states[-1] == "completed"


def test_rejection_fails_the_subtask_with_the_reason():
    owner = UserFactory()
    plan = start(
        subtask("rm", input={"tool_calls": [{"tool": "shell", "arguments": {"cmd": "rm -rf /"}}]}), owner=owner
    )
    approval = pending_approval(plan, "rm")
    approval_decide(approval_id=approval.pk, decided_by=owner, approve=False, reason="far too dangerous")
    plan = finished(plan)
    assert plan.status == PlanStatus.FAILED
    rm = plan.subtasks.get()
    assert rm.status == SubtaskStatus.FAILED
    assert "far too dangerous" in rm.error
    assert rm.retries == 0


def test_a_second_decision_is_rejected():
    owner = UserFactory()
    plan = start(subtask("a", input={"tool_calls": [{"tool": "t"}]}), owner=owner)
    approval = pending_approval(plan, "a")
    approval_decide(approval_id=approval.pk, decided_by=owner, approve=True)
    with pytest.raises(AlreadyDecided) as caught:
        approval_decide(approval_id=approval.pk, decided_by=owner, approve=False, reason="too late")
    assert caught.value.status == "approved"
    assert finished(plan).status == PlanStatus.COMPLETED


def test_concurrent_decisions_have_one_winner_and_resume_once():
    owner = UserFactory()
    plan = start(subtask("a", input={"tool_calls": [{"tool": "t"}]}), owner=owner)
    approval = pending_approval(plan, "a")
    barrier = threading.Barrier(2)
    outcomes = []

    def decide(approve: bool) -> None:
        try:
            barrier.wait()
            approval_decide(approval_id=approval.pk, decided_by=owner, approve=approve, reason="race")
            outcomes.append("won")
        except AlreadyDecided:
            outcomes.append("already_decided")
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=(flag,)) for flag in (True, False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["already_decided", "won"]
    plan = finished(plan)
    a = plan.subtasks.get()
    # The agent ran twice in all: the first run, and one resume.
    assert a.attempts == 2
    assert event_types(plan).count("approval.resolved") == 1
    assert plan.events.filter(type="subtask.queued", payload__reason__startswith="tool call").count() == 1


def test_parallel_approvals_are_decided_and_resumed_independently():
    owner = UserFactory()
    plan = start(
        subtask("left", input={"tool_calls": [{"tool": "left_tool"}]}),
        subtask("right", input={"tool_calls": [{"tool": "right_tool"}]}),
        subtask("quick", input={"result": 1}),
        subtask("join", "left", "right", "quick"),
        owner=owner,
    )
    left, right = pending_approval(plan, "left"), pending_approval(plan, "right")
    subtask_in(plan, "quick", SubtaskStatus.DONE)

    approval_decide(approval_id=right.pk, decided_by=owner, approve=True, result="R")
    subtask_in(plan, "right", SubtaskStatus.DONE)
    # Once the resumed subtask is done, all that is left in flight waits for a human again.
    wait_for(lambda: ExecutionState.objects.get(plan=plan).state == ExecState.WAITING_APPROVAL)
    assert plan.subtasks.get(key="left").status == SubtaskStatus.WAITING_APPROVAL
    assert plan.subtasks.get(key="join").status == SubtaskStatus.PENDING

    approval_decide(approval_id=left.pk, decided_by=owner, approve=True, result="L")
    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    attempts = dict(plan.subtasks.values_list("key", "attempts"))

    # Each resume re-ran only its own subtask.
    assert attempts == {"left": 2, "right": 2, "quick": 1, "join": 1}


def test_a_decision_resumes_its_subtask_ahead_of_the_batches_queued_before_it():
    owner = UserFactory()
    asking = start(subtask("ask", input={"tool_calls": [{"tool": "deploy"}]}), owner=owner)
    approval = pending_approval(asking, "ask")
    # Five times the workers' four processes: most of the batch waits in the queue.
    busy = start(*[subtask(f"work{i}", input={"sleep_ms": 300}) for i in range(20)], max_parallel=20, owner=owner)
    wait_for(lambda: busy.subtasks.filter(status=SubtaskStatus.RUNNING).count() >= 3)

    approval_decide(approval_id=approval.pk, decided_by=owner, approve=True, result="deployed")
    asking, busy = finished(asking), finished(busy)
    assert (asking.status, busy.status) == (PlanStatus.COMPLETED, PlanStatus.COMPLETED)
    resumed_at = asking.subtasks.get().started_at
    # In order of arrival it would start after all twenty; it waits only for the runs already taken.
    assert busy.subtasks.filter(started_at__gt=resumed_at).count() >= 10


def test_a_decision_advances_its_plan_in_the_worker_that_runs_it(engine):
    # The decision's chain is the run, then the plan's advance: the subtask worker that ran it
    # takes the advance itself. With the control worker consuming nothing and beat frozen (no
    # reconciler), the plan still ends, and no advance message goes to the control queue.
    control = engine["control"]
    owner = UserFactory()
    plan = start(subtask("ask", input={"tool_calls": [{"tool": "deploy"}], "result": "shipped"}), owner=owner)
    approval = pending_approval(plan, "ask")
    first_run = plan.subtasks.get().task_id
    # Logged once the run's chord has sent its callback to the control queue.
    wait_for(lambda: logged(engine, f"Task execution.run_subtask[{first_run}] succeeded"), message="the first run")
    engine["beat"].signal_group(signal.SIGSTOP)
    current_app.control.cancel_consumer("control", destination=[control.hostname], reply=True, timeout=5)
    try:
        # What the control worker had taken ends; what waits in its queue (that callback, a reconciler tick) goes.
        wait_for(lambda: holding_nothing([control.hostname]), message="the control worker to end what it had taken")
        with current_app.connection_for_write() as broker:
            broker.default_channel.queue_purge("control")
        seen = control.log.stat().st_size
        approval_decide(approval_id=approval.pk, decided_by=owner, approve=True, result="deployed")
        plan = finished(plan, timeout=30)
        queued = control_queue_tasks()
    finally:
        current_app.control.add_consumer("control", destination=[control.hostname], reply=True, timeout=5)
        engine["beat"].signal_group(signal.SIGCONT)
    assert plan.status == PlanStatus.COMPLETED
    assert plan.subtasks.get().result == {"result": "shipped", "tool_results": ["deployed"]}
    assert queued == []
    assert b"execution.advance_plan" not in control.log.read_bytes()[seen:]


def logged(cluster, line: str) -> bool:
    return any(line.encode() in worker.log.read_bytes() for worker in cluster.workers.values())


def control_queue_tasks() -> list[str]:
    """Return the names of the tasks waiting in the broker's "control" queue (each of its priority lists)."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    keys = list(client.scan_iter(match="control*"))
    return [json.loads(raw)["headers"]["task"] for key in keys for raw in client.lrange(key, 0, -1)]


def test_overdue_approval_expires_as_a_rejection():
    owner = UserFactory()
    plan = start(subtask("a", input={"tool_calls": [{"tool": "t"}]}), owner=owner)
    approval = pending_approval(plan, "a")
    assert approval.expires_at is not None
    # As if its time had run out: beat's expiry task does the rest.
    Approval.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    plan = finished(plan, timeout=30)
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.EXPIRED
    assert approval.decided_by is None
    a = plan.subtasks.get()
    assert a.status == SubtaskStatus.FAILED
    assert "expired" in a.error
