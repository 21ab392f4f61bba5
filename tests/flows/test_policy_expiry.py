"""Approval policies with real workers: what silence means (`on_expiry`), a vote that comes too late, a plan rule.

The workers and the web process read tests/support/policy.json (tests/conftest.py): its rules "quick,
then approved" and "quick, then rejected" give the tools policy_expire_approve and policy_expire_reject
one second, and "reviewed plans" asks for a plan approval from every owner in the group policy-reviewed.
The expiry sweep is the cluster's own beat (approvals.expire_overdue, every reconcile interval, 1 s
here); the late vote freezes beat so that the vote, not the sweep, finds the approval overdue.
"""

import signal

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from approvals.models import Approval, ApprovalKind, ApprovalStatus
from plans.models import Plan, PlanStatus, SubtaskStatus
from tests.conftest import POLICY_FILE
from tests.support.clients import HttpCaller
from tests.support.factories import UserFactory, plan_data, subtask
from tests.support.flows import finished, pending_approval, start, wait_for
from tests.support.invariants import assert_invariants

pytestmark = pytest.mark.usefixtures("engine")

APPROVALS = "/api/v1/approvals"
PLANS = "/api/v1/plans"


@pytest.fixture(autouse=True)
def _policy(settings) -> None:
    settings.APPROVALS_POLICY_FILE = str(POLICY_FILE)


def asking(tool: str) -> dict:
    """Return a script agent's input that asks for one call of `tool`."""
    return {"tool_calls": [{"tool": tool, "arguments": {"env": "staging"}}]}


def test_an_unanswered_call_is_approved_by_the_sweep_under_on_expiry_approve():
    plan = start(subtask("deploy", input=asking("policy_expire_approve")), subtask("after", "deploy"))
    approval = pending_approval(plan, "deploy")
    assert approval.policy == {"rule": "quick, then approved", "decision": "ask"}
    assert approval.on_expiry == "approve"

    plan = finished(plan)

    assert plan.status == PlanStatus.COMPLETED
    assert_invariants(plan)
    approval.refresh_from_db()
    assert (approval.status, approval.channel, approval.decided_by, approval.reason) == (
        ApprovalStatus.APPROVED,
        "expiry",
        None,
        "expired",
    )
    assert plan.subtasks.get(key="deploy").attempts == 2  # the first run, and one resume
    assert plan.events.filter(type="approval.resolved").count() == 1


def test_an_unanswered_call_expires_under_on_expiry_reject_and_fails_the_plan():
    plan = start(subtask("deploy", input=asking("policy_expire_reject")), subtask("after", "deploy"))
    approval = pending_approval(plan, "deploy")
    assert approval.on_expiry == "reject"

    plan = finished(plan)

    assert plan.status == PlanStatus.FAILED
    assert_invariants(plan)
    approval.refresh_from_db()
    assert (approval.status, approval.channel, approval.decided_by, approval.reason) == (
        ApprovalStatus.EXPIRED,
        "expiry",
        None,
        "expired",
    )
    deploy, after = (plan.subtasks.get(key=key) for key in ("deploy", "after"))
    assert deploy.status == SubtaskStatus.FAILED
    assert deploy.error == "Tool call 'policy_expire_reject' was rejected: expired"
    # fail_fast (the default): the first failed subtask cancels what has not started.
    assert after.status == SubtaskStatus.CANCELLED
    assert plan.events.filter(type="approval.resolved").count() == 1


@pytest.mark.parametrize(
    ("tool", "decided", "outcome"),
    [
        ("policy_expire_approve", ApprovalStatus.APPROVED, PlanStatus.COMPLETED),
        ("policy_expire_reject", ApprovalStatus.EXPIRED, PlanStatus.FAILED),
    ],
)
def test_a_vote_on_an_overdue_approval_applies_on_expiry_once_and_is_already_decided(
    engine, web, tool, decided, outcome
):
    owner = UserFactory()
    # Beat frozen before the plan starts: its last tick expires before the approval can be overdue.
    engine["beat"].signal_group(signal.SIGSTOP)
    try:
        plan = start(subtask("deploy", input=asking(tool)), owner=owner)
        approval = pending_approval(plan, "deploy")
        assert approval.expires_at is not None
        wait_for(lambda: timezone.now() > approval.expires_at, message="the approval to be overdue")
        assert Approval.objects.get(pk=approval.pk).status == ApprovalStatus.PENDING  # no sweep has run

        late = HttpCaller(web.url, owner).post(f"{APPROVALS}/{approval.pk}/approve/")
    finally:
        engine["beat"].signal_group(signal.SIGCONT)

    assert (late.status, late.code) == (409, "already_decided")
    assert late.body["error"]["details"] == {"status": decided}
    plan = finished(plan)
    assert plan.status == outcome
    assert_invariants(plan)
    approval.refresh_from_db()
    assert (approval.status, approval.channel, approval.decided_by) == (decided, "expiry", None)
    assert approval.votes.count() == 0
    assert plan.events.filter(type="approval.resolved").count() == 1
    assert not plan.events.filter(type="approval.voted").exists()


def test_a_plan_rule_keeps_a_reviewed_owners_plan_a_draft_though_it_asked_for_no_approval(web):
    reviewed = UserFactory()
    Group.objects.get_or_create(name="policy-reviewed")[0].user_set.add(reviewed)
    as_reviewed = HttpCaller(web.url, reviewed)

    created = as_reviewed.post(f"{PLANS}/", plan_data(subtask("a"), subtask("b", "a"), requires_approval=False))

    assert (created.status, created.body["status"]) == (201, PlanStatus.DRAFT)
    approval = Approval.objects.get(plan_id=created.body["id"])
    assert (approval.kind, approval.status) == (ApprovalKind.PLAN, ApprovalStatus.PENDING)
    assert approval.policy == {"rule": "reviewed plans", "decision": "ask"}
    approved = as_reviewed.post(f"{PLANS}/{created.body['id']}/approve/")
    assert approved.status == 200, approved.body
    plan = finished(approval.plan)
    assert plan.status == PlanStatus.COMPLETED
    assert_invariants(plan)
    approval.refresh_from_db()
    assert (approval.status, approval.channel, approval.decided_by) == (ApprovalStatus.APPROVED, "api", reviewed)


def test_a_plan_rule_for_a_group_leaves_an_owner_outside_it_running_at_once(web):
    Group.objects.get_or_create(name="policy-reviewed")
    created = HttpCaller(web.url, UserFactory()).post(f"{PLANS}/", plan_data(subtask("a"), requires_approval=False))

    assert (created.status, created.body["status"]) == (201, PlanStatus.IN_PROGRESS)
    plan = finished(Plan.objects.get(pk=created.body["id"]))
    assert plan.status == PlanStatus.COMPLETED
    assert_invariants(plan)
    assert not plan.approvals.exists()
