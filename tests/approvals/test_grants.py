"""Grants in this process: an approving vote remembers a tool call; later calls are approved at once, or not."""

import json

import pytest
from django.contrib.auth.models import Group, Permission

from approvals.errors import VoteInvalid
from approvals.grants import GrantNotFound, GrantRevokeRefused, grant_revoke, grants_of_plan
from approvals.models import Approval, ApprovalKind, ApprovalStatus, Grant
from approvals.services import approval_decide
from execution.services import plan_submit
from plans.models import Plan, PlanStatus
from tests.support.factories import UserFactory, plan_data, subtask
from tests.support.flows import start


@pytest.fixture
def policy(settings, tmp_path):
    def write(*rules: dict) -> None:
        path = tmp_path / "policy.json"
        path.write_text(json.dumps({"rules": list(rules)}))
        settings.APPROVALS_POLICY_FILE = str(path)

    return write


def calls(*tools: str | tuple[str, dict]) -> dict:
    """A script agent's input asking for these tool calls one after another (a name, or a name and arguments)."""
    asked = [(tool, {}) if isinstance(tool, str) else tool for tool in tools]
    return {"tool_calls": [{"tool": tool, "arguments": arguments} for tool, arguments in asked]}


def pending(plan: Plan) -> Approval:
    return Approval.objects.select_related("subtask").get(plan=plan, status=ApprovalStatus.PENDING)


def decided(plan: Plan) -> list[tuple[str, str]]:
    approvals = Approval.objects.filter(plan=plan, kind=ApprovalKind.TOOL_CALL).order_by("requested_at")
    return list(approvals.values_list("status", "channel"))


def test_remember_plan_approves_the_later_calls_of_the_tool_in_the_plan_at_once(worker, outbox):
    plan = start(subtask("a", input=calls("deploy", "deploy", "lint", "deploy")))
    worker.drain()

    approval_decide(approval_id=pending(plan).pk, decided_by=plan.owner, approve=True, remember="plan")
    worker.drain()

    # The second deploy by the grant; lint is another tool and is asked for.
    assert decided(plan) == [("approved", "api"), ("approved", "grant"), ("pending", "")]
    [grant] = grants_of_plan(plan)
    assert (grant.tool, grant.agent, grant.scope, grant.created_by) == ("deploy", "script", "plan", plan.owner)
    by_grant = Approval.objects.get(plan=plan, channel="grant")
    assert (by_grant.decided_by, by_grant.reason) == (None, f"remembered for the plan by {plan.owner.username}")
    assert plan.events.filter(type="grant.created").count() == 1

    approval_decide(approval_id=pending(plan).pk, decided_by=plan.owner, approve=True)
    worker.drain()
    assert [status for status, _ in decided(plan)] == ["approved"] * 4
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.COMPLETED


def test_remember_session_covers_the_owners_plans_of_that_session_only(worker, outbox):
    owner = UserFactory()
    first = start(subtask("a", input=calls("deploy")), owner=owner, session_id="s1")
    worker.drain()
    approval_decide(approval_id=pending(first).pk, decided_by=owner, approve=True, remember="session")

    same_session = start(subtask("a", input=calls("deploy")), owner=owner, session_id="s1")
    other_session = start(subtask("a", input=calls("deploy")), owner=owner, session_id="s2")
    other_owner = start(subtask("a", input=calls("deploy")), session_id="s1")
    no_session = start(subtask("a", input=calls("deploy")), owner=owner)
    worker.drain()

    assert decided(same_session) == [("approved", "grant")]
    assert Plan.objects.get(pk=same_session.pk).status == PlanStatus.COMPLETED
    for plan in (other_session, other_owner, no_session):
        assert decided(plan) == [("pending", "")]
    assert [grant.scope for grant in grants_of_plan(same_session)] == ["session"]
    assert list(grants_of_plan(other_session)) == []


def test_a_rule_outranks_a_grant_deny_and_a_quorum_above_one(policy, worker, outbox):
    policy(
        {"name": "not prod", "match": {"tool": "deploy", "arguments": {"env": "prod"}}, "decision": "deny"},
        {"name": "two for staging", "match": {"tool": "deploy", "arguments": {"env": "staging"}}, "quorum": 2}
        | {"decision": "ask"},
    )
    plan = start(
        subtask("a", input=calls("deploy", ("deploy", {"env": "prod"}))),
        subtask("b", input=calls(("deploy", {"env": "staging"}))),
        failure_policy="continue",
    )
    worker.drain()
    first = Approval.objects.get(plan=plan, subtask__key="a", status=ApprovalStatus.PENDING)
    approval_decide(approval_id=first.pk, decided_by=plan.owner, approve=True, remember="plan")
    worker.drain()

    by_subtask = dict(Approval.objects.filter(plan=plan).values_list("subtask__key", "status").order_by("requested_at"))
    assert Approval.objects.filter(plan=plan, subtask__key="a", channel="policy", status="rejected").count() == 1
    assert by_subtask["b"] == "pending"  # a quorum of two is asked for, grant or not
    staging = Approval.objects.get(plan=plan, subtask__key="b")
    with pytest.raises(VoteInvalid) as refused:
        approval_decide(approval_id=staging.pk, decided_by=plan.owner, approve=True, remember="plan")
    assert refused.value.details == {"remember": [refused.value.message.removeprefix("remember: ")]}
    assert staging.votes.count() == 0


def test_remember_is_refused_where_it_could_never_apply(settings, worker, outbox):
    plan = start(subtask("a", input=calls("deploy")))
    worker.drain()
    approval = pending(plan)

    with pytest.raises(VoteInvalid, match="approving vote"):
        approval_decide(approval_id=approval.pk, decided_by=plan.owner, approve=False, reason="no", remember="plan")
    with pytest.raises(VoteInvalid, match="session_id"):
        approval_decide(approval_id=approval.pk, decided_by=plan.owner, approve=True, remember="session")
    draft = plan_submit(owner=plan.owner, data=plan_data(subtask("a")))
    plan_approval = Approval.objects.get(plan=draft, kind=ApprovalKind.PLAN)
    with pytest.raises(VoteInvalid, match="Only a tool call"):
        approval_decide(approval_id=plan_approval.pk, decided_by=plan.owner, approve=True, remember="plan")

    assert not Grant.objects.exists()
    assert pending(plan).votes.count() == 0  # nothing was recorded


def test_grants_do_not_apply_when_the_requester_must_be_separate(settings, worker, outbox):
    decider = UserFactory(is_staff=True)
    decider.user_permissions.add(Permission.objects.get(codename="decide_approval"))
    plan = start(subtask("a", input=calls("deploy", "deploy")))
    worker.drain()
    approval_decide(approval_id=pending(plan).pk, decided_by=decider, approve=True, remember="plan")
    settings.APPROVALS_SEPARATE_REQUESTER = True
    worker.drain()

    assert decided(plan) == [("approved", "api"), ("pending", "")]


def test_revoking_a_grant_the_owner_or_a_decider_others_refused_or_not_found(worker, outbox):
    plan = start(subtask("a", input=calls("deploy")), subtask("b", "a", input=calls("deploy")))
    worker.drain()
    approval_decide(approval_id=pending(plan).pk, decided_by=plan.owner, approve=True, remember="plan")
    [grant] = Grant.objects.filter(plan=plan)

    with pytest.raises(GrantNotFound):
        grant_revoke(grant_id=grant.pk, user=UserFactory())
    approver = UserFactory()
    group, _ = Group.objects.get_or_create(name="grant-approvers")
    group.user_set.add(approver)
    Approval.objects.filter(plan=plan).update(approvers=["group:grant-approvers"])  # sees the plan, read-only
    with pytest.raises(GrantRevokeRefused):
        grant_revoke(grant_id=grant.pk, user=approver)

    grant_revoke(grant_id=grant.pk, user=plan.owner)
    worker.drain()

    assert not Grant.objects.exists()
    assert Approval.objects.get(plan=plan, subtask__key="b").status == ApprovalStatus.PENDING  # asked again
    revoked = plan.events.get(type="grant.revoked").payload
    assert (revoked["tool"], revoked["revoked_by"]) == ("deploy", plan.owner.username)
    with pytest.raises(GrantNotFound):
        grant_revoke(grant_id=grant.pk, user=plan.owner)


def test_the_same_grant_twice_is_kept_once(worker, outbox):
    plan = start(subtask("a", input=calls("deploy")), subtask("b", input=calls("deploy")))
    worker.drain()
    for approval in Approval.objects.filter(plan=plan, status=ApprovalStatus.PENDING):
        approval_decide(approval_id=approval.pk, decided_by=plan.owner, approve=True, remember="plan")

    assert Grant.objects.filter(plan=plan).count() == 1
