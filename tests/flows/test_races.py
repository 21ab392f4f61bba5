"""Races through the API with real workers: many decisions at once, a decision against a cancel, two starts at once."""

from collections import Counter

import pytest

from approvals.models import Approval, ApprovalStatus
from approvals.services import plan_approve
from execution.models import ExecutionState
from execution.services import plan_submit
from plans.models import Plan, PlanStatus, SubtaskStatus
from tests.support.clients import Answer, HttpCaller, LocalCaller, approver, at_once
from tests.support.factories import UserFactory, plan_data, subtask
from tests.support.flows import finished, pending_approval, start
from tests.support.invariants import assert_invariants

pytestmark = pytest.mark.usefixtures("engine")

APPROVALS = "/api/v1/approvals"
PLANS = "/api/v1/plans"
ASKS = {"tool_calls": [{"tool": "deploy", "arguments": {"env": "prod"}}]}


def decision(caller, approval_id, number: int) -> Answer:
    """Approve (odd numbers) or reject (even ones), saying who decided."""
    if number % 2:
        return caller.post(f"{APPROVALS}/{approval_id}/approve/", {"result": f"deployed by {number}"})
    return caller.post(f"{APPROVALS}/{approval_id}/reject/", {"reason": f"refused by {number}"})


def events_after(plan: Plan, seq: int, kind: str, key: str) -> int:
    return plan.events.filter(seq__gt=seq, type=kind, payload__subtask_key=key).count()


def resolved_seq(plan: Plan, approval: Approval) -> int:
    return plan.events.get(type="approval.resolved", payload__approval_id=str(approval.pk)).seq


def test_twenty_concurrent_decisions_have_one_winner_and_one_resume(web):
    owner = UserFactory()
    deciders = [owner, *(approver(f"approver{number}") for number in range(1, 20))]
    # Half over HTTP, half through this process's threads: those meet the HTTP ones at the database.
    callers = [
        HttpCaller(web.url, user) if number % 4 < 2 else LocalCaller(user) for number, user in enumerate(deciders)
    ]
    plan = start(subtask("deploy", input=ASKS), subtask("after", "deploy"), owner=owner)
    approval = pending_approval(plan, "deploy")

    answers = at_once(
        *(lambda c=caller, n=number: decision(c, approval.pk, n) for number, caller in enumerate(callers))
    )

    assert Counter(answer.status for answer in answers) == {200: 1, 409: 19}
    [winner] = [number for number, answer in enumerate(answers) if answer.status == 200]
    won = answers[winner].body
    for answer in answers:
        if answer.status == 409:
            assert (answer.code, answer.body["error"]["details"]) == ("already_decided", {"status": won["status"]})
    plan = finished(plan)
    assert_invariants(plan)
    deploy = plan.subtasks.get(key="deploy")
    # The first run asked; exactly one decision resumed it, once.
    assert deploy.attempts == 2
    after_decision = resolved_seq(plan, approval)
    assert events_after(plan, after_decision, "subtask.queued", "deploy") == 1
    assert events_after(plan, after_decision, "subtask.started", "deploy") == 1
    assert plan.events.filter(type="approval.resolved").count() == 1
    if winner % 2:
        assert (plan.status, won["status"], won["result"]) == (
            PlanStatus.COMPLETED,
            "approved",
            f"deployed by {winner}",
        )
        assert deploy.result == {"result": "deploy: done", "tool_results": [f"deployed by {winner}"]}
    else:
        assert (plan.status, won["status"], won["reason"]) == (PlanStatus.FAILED, "rejected", f"refused by {winner}")
        assert f"refused by {winner}" in deploy.error


def waiting_beside_a_slow_sibling(owner) -> tuple[Plan, Approval]:
    """Return a plan with a subtask waiting for approval while its sibling still runs (so a cancel applies)."""
    plan = start(
        subtask("asks", input=ASKS),
        subtask("slow", input={"sleep_ms": 4000}),
        subtask("after", "asks", "slow"),
        owner=owner,
    )
    return plan, pending_approval(plan, "asks")


def test_an_approval_then_a_cancel_resumes_the_subtask_then_cancels_the_plan(web):
    owner = UserFactory()
    caller = HttpCaller(web.url, owner)
    plan, approval = waiting_beside_a_slow_sibling(owner)

    assert caller.post(f"{APPROVALS}/{approval.pk}/approve/", {"result": "ok"}).status == 200
    assert caller.post(f"{PLANS}/{plan.pk}/cancel/", {"reason": "changed my mind"}).status == 200

    plan = finished(plan)
    assert_invariants(plan)
    assert plan.status == PlanStatus.CANCELLED
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.APPROVED
    cancelled = plan.events.get(type="plan.cancelled").seq
    assert resolved_seq(plan, approval) < cancelled
    assert events_after(plan, resolved_seq(plan, approval), "subtask.queued", "asks") == 1
    assert plan.subtasks.get(key="asks").status in (SubtaskStatus.CANCELLED, SubtaskStatus.DONE)
    assert plan.subtasks.get(key="after").status == SubtaskStatus.CANCELLED


def test_a_cancel_then_an_approval_is_already_decided_and_nothing_resumes(web):
    owner = UserFactory()
    caller = HttpCaller(web.url, owner)
    plan, approval = waiting_beside_a_slow_sibling(owner)

    assert caller.post(f"{PLANS}/{plan.pk}/cancel/", {"reason": "changed my mind"}).status == 200
    late = caller.post(f"{APPROVALS}/{approval.pk}/approve/", {"result": "ok"})

    assert (late.status, late.code, late.body["error"]["details"]) == (409, "already_decided", {"status": "cancelled"})
    plan = finished(plan)
    assert_invariants(plan)
    asks = plan.subtasks.get(key="asks")
    assert (plan.status, asks.status, asks.attempts) == (PlanStatus.CANCELLED, SubtaskStatus.CANCELLED, 1)
    assert events_after(plan, resolved_seq(plan, approval), "subtask.queued", "asks") == 0


def test_an_approval_and_a_cancel_at_once_leave_a_consistent_plan_either_way(web):
    owner = UserFactory()
    over_http, here = HttpCaller(web.url, owner), LocalCaller(owner)
    races = [waiting_beside_a_slow_sibling(owner) for _ in range(3)]
    outcomes = []
    for round_number, (plan, approval) in enumerate(races):
        # Alternate which door each side takes, so both orders of arrival get their chance.
        approving, cancelling = (over_http, here) if round_number % 2 else (here, over_http)
        decided, cancel = at_once(
            lambda a=approval, c=approving: c.post(f"{APPROVALS}/{a.pk}/approve/", {"result": "ok"}),
            lambda p=plan, c=cancelling: c.post(f"{PLANS}/{p.pk}/cancel/", {"reason": "stop"}),
        )
        assert cancel.status == 200, cancel.body
        outcomes.append((plan, approval, decided))

    assert_invariants([plan for plan, _, _ in outcomes])
    for plan, approval, decided in outcomes:
        plan.refresh_from_db()
        approval.refresh_from_db()
        assert plan.status == PlanStatus.CANCELLED
        asks = plan.subtasks.get(key="asks")
        after_decision = resolved_seq(plan, approval)
        if decided.status == 200:
            # The decision came first: the subtask resumed, then the cancel stopped it (or it had finished).
            assert approval.status == ApprovalStatus.APPROVED
            assert events_after(plan, after_decision, "subtask.queued", "asks") == 1
            assert after_decision < plan.events.get(type="plan.cancelled").seq
            assert asks.status in (SubtaskStatus.CANCELLED, SubtaskStatus.DONE)
        else:
            # The cancel came first: the approval was cancelled with the plan, and the decision found it so.
            assert (decided.status, decided.code) == (409, "already_decided")
            assert decided.body["error"]["details"] == {"status": "cancelled"}
            assert approval.status == ApprovalStatus.CANCELLED
            assert (asks.status, asks.attempts) == (SubtaskStatus.CANCELLED, 1)
            assert events_after(plan, after_decision, "subtask.queued", "asks") == 0


def test_two_executes_at_once_start_one_execution(web):
    owner, root = UserFactory(), UserFactory(is_staff=True, is_superuser=True)
    over_http, here = HttpCaller(web.url, owner), LocalCaller(root)
    plans = []
    for _ in range(3):
        plan = plan_submit(owner=owner, data=plan_data(subtask("a"), subtask("b", "a"), auto_execute=False))
        plan_approve(plan_id=plan.pk, user=owner)
        plans.append(plan)

    for plan in plans:
        answers = at_once(
            lambda p=plan: over_http.post(f"{PLANS}/{p.pk}/execute/"),
            lambda p=plan: here.post(f"{PLANS}/{p.pk}/execute/"),
        )
        assert sorted(answer.status for answer in answers) == [200, 409]
        [refused] = [answer for answer in answers if answer.status == 409]
        assert refused.code == "invalid_state"
        # The loser found the winner's start (or, arriving late, the plan already done).
        assert refused.body["error"]["details"]["current_status"] in ("in_progress", "completed")

    for plan in plans:
        plan = finished(plan)
        assert plan.status == PlanStatus.COMPLETED
        assert ExecutionState.objects.filter(plan=plan).count() == 1
        assert plan.execution.transitions.filter(from_state="preparing").count() == 1
        assert plan.events.filter(type="plan.started").count() == 1
        assert [s.attempts for s in plan.subtasks.order_by("position")] == [1, 1]
    assert_invariants(plans)
