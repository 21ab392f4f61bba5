"""Deciding approvals, in this process: a decision once, then what waited for it; expiry; cancel; decisions at once."""

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.errors import AlreadyDecided
from approvals.models import Approval, ApprovalKind, ApprovalStatus
from approvals.services import ApprovalsGate, approval_decide, approvals_expire_overdue
from execution.engine.approval_gate import approval_gate
from execution.services import plan_cancel, plan_submit
from plans.models import Plan, PlanStatus
from plans.models import SubtaskStatus as S
from tests.support.clients import at_once
from tests.support.factories import UserFactory, plan_data, subtask
from tests.support.flows import start

DEPLOY = {"tool_calls": [{"tool": "deploy"}]}


def tool_call_waiting(worker) -> Approval:
    plan = start(subtask("a", input=DEPLOY))
    worker.drain()
    return Approval.objects.get(plan=plan)


def overdue(approval: Approval) -> None:
    Approval.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))


def test_the_approvals_app_is_the_gate_the_engine_asks():
    assert isinstance(approval_gate(), ApprovalsGate)


def test_approving_a_plan_approval_approves_the_plan_and_sends_its_first_batch(worker, outbox):
    plan = plan_submit(owner=UserFactory(), data=plan_data(subtask("a")))
    approval = Approval.objects.get(plan=plan, kind=ApprovalKind.PLAN)

    approval_decide(approval_id=approval.pk, decided_by=plan.owner, approve=True)

    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.IN_PROGRESS
    assert outbox.kinds() == ["batch"]
    assert Approval.objects.get(pk=approval.pk).decided_by == plan.owner


def test_rejecting_a_plan_approval_cancels_the_plan_saying_why(worker, outbox):
    plan = plan_submit(owner=UserFactory(), data=plan_data(subtask("a")))

    approval_decide(approval_id=plan.approvals.get().pk, decided_by=None, approve=False, reason="too risky")

    cancelled = plan.events.get(type="plan.cancelled").payload
    assert (cancelled["reason"], cancelled["actor"]) == ("plan approval rejected: too risky", "system")
    assert (plan.subtasks.get().status, outbox.messages) == (S.CANCELLED, [])


def test_a_second_decision_is_already_decided_and_resumes_nothing_twice(worker, outbox):
    approval = tool_call_waiting(worker)
    approval_decide(approval_id=approval.pk, decided_by=None, approve=True)
    seq = Plan.objects.get(pk=approval.plan_id).last_event_seq

    with pytest.raises(AlreadyDecided) as caught:
        approval_decide(approval_id=approval.pk, decided_by=None, approve=False, reason="too late")

    assert caught.value.status == ApprovalStatus.APPROVED
    assert [run.attempt for run in outbox.runs()] == [2]
    assert Plan.objects.get(pk=approval.plan_id).last_event_seq == seq


def test_an_overdue_tool_call_expires_as_a_rejection_and_its_agent_resumes_to_fail(worker, outbox):
    approval = tool_call_waiting(worker)
    overdue(approval)

    assert approvals_expire_overdue() == 1
    assert approvals_expire_overdue() == 0
    worker.drain()

    assert Approval.objects.get(pk=approval.pk).status == ApprovalStatus.EXPIRED
    task = approval.subtask
    task.refresh_from_db()
    assert (task.status, task.error) == (S.FAILED, "Tool call 'deploy' was rejected: expired")


def test_an_overdue_plan_approval_expires_and_its_plan_is_cancelled(worker, outbox):
    plan = plan_submit(owner=UserFactory(), data=plan_data(subtask("a")))
    overdue(plan.approvals.get())

    assert approvals_expire_overdue() == 1

    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.CANCELLED
    assert plan.events.get(type="plan.cancelled").payload["reason"] == "plan approval expired"


def test_cancelling_a_plan_cancels_its_pending_approvals_and_a_late_decision_is_already_decided(worker, outbox):
    approval = tool_call_waiting(worker)

    plan_cancel(plan_id=approval.plan_id, actor="op", reason="enough")
    with pytest.raises(AlreadyDecided):
        approval_decide(approval_id=approval.pk, decided_by=None, approve=True)

    approval.refresh_from_db()
    assert (approval.status, approval.reason) == (ApprovalStatus.CANCELLED, "enough")
    assert outbox.runs() == []


def test_decisions_at_once_have_one_winner_and_resume_the_subtask_once(worker, outbox):
    approval = tool_call_waiting(worker)

    def decide(approve: bool):
        def call() -> str:
            try:
                return approval_decide(approval_id=approval.pk, decided_by=None, approve=approve, reason="r").status
            except AlreadyDecided:
                return "already_decided"

        return call

    outcomes = at_once(decide(True), decide(False), decide(True), decide(False))

    winner = Approval.objects.get(pk=approval.pk).status
    assert sorted(outcomes) == sorted([winner, "already_decided", "already_decided", "already_decided"])
    assert [run.attempt for run in outbox.runs()] == [2]
    assert Plan.objects.get(pk=approval.plan_id).events.filter(type="approval.resolved").count() == 1
