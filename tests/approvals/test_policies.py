"""Approval policies in this process: rules decide, ask or deny; votes decide at the quorum; who may vote."""

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.utils import timezone

from approvals.errors import AlreadyDecided, AlreadyVoted, VoteInvalid, VoteRefused
from approvals.models import Approval, ApprovalKind, ApprovalStatus, Vote
from approvals.selectors import approvals_visible_to, plans_visible_to_voters
from approvals.services import approval_decide, approvals_expire_overdue, plan_approve
from execution.agents.base import ToolCalls
from execution.agents.definitions import agent_from_definition
from execution.services import plan_submit
from plans.models import Plan, PlanStatus
from plans.models import SubtaskStatus as S
from tests.fakes.openai_server import completion, tool_call
from tests.support.agent_contexts import READ_FILE, context
from tests.support.clients import at_once
from tests.support.factories import UserFactory, plan_data, subtask
from tests.support.flows import start


@pytest.fixture
def policy(settings, tmp_path):
    """Put these rules in force in this process."""

    def write(*rules: dict) -> None:
        path = tmp_path / "policy.json"
        path.write_text(json.dumps({"rules": list(rules)}))
        settings.APPROVALS_POLICY_FILE = str(path)

    return write


def group_of(name: str, *users) -> Group:
    group, _ = Group.objects.get_or_create(name=name)
    group.user_set.add(*users)
    return group


def calls(*tools: str, requires_approval: bool = True) -> dict:
    return {"tool_calls": [{"tool": tool, "requires_approval": requires_approval} for tool in tools]}


def waiting(worker, *tools: str, owner=None, requires_approval: bool = True) -> Approval:
    plan = start(subtask("a", input=calls(*tools, requires_approval=requires_approval)), owner=owner)
    worker.drain()
    return Approval.objects.get(plan=plan)


DEPLOYS = {
    "name": "two deployers",
    "match": {"tool": "deploy*"},
    "decision": "ask",
    "approvers": ["group:deployers"],
    "quorum": 2,
    "separate_requester": True,
}


# --- Rules -------------------------------------------------------------------------------------


def test_an_allow_rule_approves_at_once_with_channel_policy_and_the_agent_goes_on(policy, worker, outbox):
    policy({"name": "reads", "match": {"tool": "read_*"}, "decision": "allow"})
    approval = waiting(worker, "read_file")
    worker.drain()

    approval.refresh_from_db()
    assert (approval.status, approval.channel, approval.decided_by) == ("approved", "policy", None)
    assert approval.policy == {"rule": "reads", "decision": "allow"}
    assert approval.reason == "allowed by policy reads"
    plan = Plan.objects.get(pk=approval.plan_id)
    assert plan.status == PlanStatus.COMPLETED
    assert plan.subtasks.get().tool_calls[0]["status"] == "approved"


def test_a_deny_rule_rejects_at_once_with_its_reason_and_the_call_is_never_made(policy, worker, outbox):
    policy({"name": "no shell", "match": {"tool": "shell"}, "decision": "deny", "reason": "no shells here"})
    approval = waiting(worker, "shell")
    worker.drain()

    approval.refresh_from_db()
    assert (approval.status, approval.channel, approval.reason) == ("rejected", "policy", "no shells here")
    task = approval.subtask
    task.refresh_from_db()
    assert task.status == S.FAILED
    assert "no shells here" in task.error


def test_a_deny_rule_gates_a_call_its_agent_marked_as_needing_no_approval(policy, worker, outbox):
    policy({"name": "no shell", "match": {"tool": "shell"}, "decision": "deny"})
    approval = waiting(worker, "shell", requires_approval=False)
    worker.drain()

    assert (approval.status, approval.reason) == ("rejected", "denied by policy no shell")
    assert Plan.objects.get(pk=approval.plan_id).status == PlanStatus.FAILED


def test_an_ask_rule_gates_a_call_that_needed_no_approval_and_an_allow_rule_changes_nothing(policy, worker, outbox):
    policy(
        {"name": "ask deploys", "match": {"tool": "deploy"}, "decision": "ask"},
        {"name": "allow the rest", "match": {}, "decision": "allow"},
    )
    approval = waiting(worker, "deploy", requires_approval=False)
    assert (approval.status, approval.policy) == ("pending", {"rule": "ask deploys", "decision": "ask"})

    plan = start(subtask("b", input=calls("lint", requires_approval=False)))
    worker.drain()
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.COMPLETED
    assert not Approval.objects.filter(plan=plan).exists()


def test_a_plan_ask_rule_keeps_a_plan_submitted_without_approval_a_draft(policy, worker, outbox):
    policy({"name": "review plans", "match": {"kind": "plan"}, "decision": "ask"})
    plan = start(subtask("a"))
    assert plan.status == PlanStatus.DRAFT
    approval = Approval.objects.get(plan=plan, kind=ApprovalKind.PLAN, status=ApprovalStatus.PENDING)
    assert approval.policy == {"rule": "review plans", "decision": "ask"}
    assert outbox.messages == []


def test_a_plan_deny_rule_cancels_the_plan_and_an_allow_rule_starts_it(policy, worker, outbox):
    policy(
        {"name": "no shells", "match": {"kind": "plan", "agent": "shell*"}, "decision": "deny"},
        {"name": "scripts run", "match": {"kind": "plan", "agent": "script"}, "decision": "allow"},
    )
    denied = plan_submit(owner=UserFactory(), data=plan_data(subtask("a", agent="coder")))
    assert denied.status == PlanStatus.DRAFT  # no rule fits a coder plan: the owner decides

    allowed = plan_submit(owner=UserFactory(), data=plan_data(subtask("a")))
    approval = allowed.approvals.get()
    assert (allowed.status, approval.status, approval.channel) == (PlanStatus.IN_PROGRESS, "approved", "policy")


def test_a_requester_group_rule_fits_the_owners_group(policy, worker, outbox):
    policy({"name": "interns", "match": {"kind": "plan", "requester_group": "interns"}, "decision": "deny"})
    intern = UserFactory()
    group_of("interns", intern)
    plan = plan_submit(owner=intern, data=plan_data(subtask("a")))
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.CANCELLED
    assert plan.approvals.get().reason == "denied by policy interns"
    assert plan_submit(owner=UserFactory(), data=plan_data(subtask("a"))).status == PlanStatus.DRAFT


def test_an_ask_rule_sets_the_expiry_and_on_expiry_approve_approves(policy, worker, outbox):
    policy({"name": "quick", "match": {"tool": "t"}, "decision": "ask", "expires_after_s": 60, "on_expiry": "approve"})
    approval = waiting(worker, "t")
    assert timedelta(seconds=55) < approval.expires_at - timezone.now() <= timedelta(seconds=60)
    Approval.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert approvals_expire_overdue() == 1
    worker.drain()
    approval.refresh_from_db()
    assert (approval.status, approval.channel) == ("approved", "expiry")
    assert Plan.objects.get(pk=approval.plan_id).status == PlanStatus.COMPLETED


def test_a_vote_on_an_overdue_approval_applies_on_expiry_and_is_already_decided(policy, worker, outbox):
    approval = waiting(worker, "t")
    Approval.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    with pytest.raises(AlreadyDecided) as caught:
        approval_decide(approval_id=approval.pk, decided_by=approval.plan.owner, approve=True)

    assert caught.value.status == ApprovalStatus.EXPIRED
    approval.refresh_from_db()
    assert (approval.status, approval.channel) == ("expired", "expiry")
    assert not Vote.objects.exists()


# --- Votes -------------------------------------------------------------------------------------


def test_approvals_decide_at_the_quorum_and_each_vote_is_announced(policy, worker, outbox):
    policy(DEPLOYS)
    alice, bob = UserFactory(), UserFactory()
    group_of("deployers", alice, bob)
    approval = waiting(worker, "deploy")

    first = approval_decide(approval_id=approval.pk, decided_by=alice, approve=True, reason="ok")
    assert first.status == ApprovalStatus.PENDING
    assert outbox.runs() == []  # nothing resumes before the quorum
    with pytest.raises(AlreadyVoted):
        approval_decide(approval_id=approval.pk, decided_by=alice, approve=True)
    second = approval_decide(approval_id=approval.pk, decided_by=bob, approve=True)

    assert (second.status, second.decided_by, second.channel) == ("approved", bob, "api")
    voted = [e.payload for e in Plan.objects.get(pk=approval.plan_id).events.filter(type="approval.voted")]
    assert [(v["user"], v["decision"], v["approvals"], v["quorum"]) for v in voted] == [
        (alice.username, "approve", 1, 2),
        (bob.username, "approve", 2, 2),
    ]
    assert list(approval.votes.values_list("user", "decision", "channel")) == [
        (alice.pk, "approve", "api"),
        (bob.pk, "approve", "api"),
    ]
    worker.drain()
    assert Plan.objects.get(pk=approval.plan_id).status == PlanStatus.COMPLETED


def test_one_reject_decides_after_an_approve(policy, worker, outbox):
    policy(DEPLOYS)
    alice, bob = UserFactory(), UserFactory()
    group_of("deployers", alice, bob)
    approval = waiting(worker, "deploy")

    approval_decide(approval_id=approval.pk, decided_by=alice, approve=True)
    vetoed = approval_decide(approval_id=approval.pk, decided_by=bob, approve=False, reason="not on a Friday")

    assert (vetoed.status, vetoed.reason) == ("rejected", "not on a Friday")
    with pytest.raises(AlreadyDecided):
        approval_decide(approval_id=approval.pk, decided_by=UserFactory(), approve=True)


def test_who_may_vote_the_owner_separated_and_others_not_named(policy, worker, outbox):
    policy(DEPLOYS)
    owner, deployer, stranger = UserFactory(), UserFactory(), UserFactory()
    group_of("deployers", owner, deployer)
    approval = waiting(worker, "deploy", owner=owner)

    with pytest.raises(VoteRefused) as separated:
        approval_decide(approval_id=approval.pk, decided_by=owner, approve=True)
    assert separated.value.details == {"reason": "requester_cannot_approve"}
    with pytest.raises(VoteRefused) as outsider:
        approval_decide(approval_id=approval.pk, decided_by=stranger, approve=False, reason="no")
    assert outsider.value.details == {"reason": "not_an_approver"}
    with pytest.raises(VoteInvalid):
        approval_decide(approval_id=approval.pk, decided_by=deployer, approve=True, arguments={"env": "prod"})
    assert not Vote.objects.exists()

    assert list(approvals_visible_to(deployer)) == [approval]
    assert list(plans_visible_to_voters(deployer)) == [approval.plan]
    assert list(approvals_visible_to(stranger)) == []
    assert list(plans_visible_to_voters(stranger)) == []


def test_by_default_the_owner_and_deciders_vote_and_one_vote_decides(worker, outbox):
    approval = waiting(worker, "t")
    decider = UserFactory(is_staff=True)
    decider.user_permissions.add(Permission.objects.get(codename="decide_approval"))

    with pytest.raises(VoteRefused):
        approval_decide(approval_id=approval.pk, decided_by=UserFactory(), approve=True)
    decided = approval_decide(approval_id=approval.pk, decided_by=decider, approve=True)

    assert (decided.status, decided.quorum, decided.approvers, decided.policy) == ("approved", 1, None, None)


def test_the_setting_separates_the_requester_when_no_rule_fits(settings, worker, outbox):
    settings.APPROVALS_SEPARATE_REQUESTER = True
    plan = plan_submit(owner=UserFactory(), data=plan_data(subtask("a")))
    with pytest.raises(VoteRefused) as refused:
        plan_approve(plan_id=plan.pk, user=plan.owner)
    assert refused.value.details == {"reason": "requester_cannot_approve"}


def test_votes_at_once_decide_once_and_resume_once(policy, worker, outbox):
    policy({**DEPLOYS, "separate_requester": False})
    voters = [UserFactory() for _ in range(3)]
    group_of("deployers", *voters)
    approval = waiting(worker, "deploy")

    def vote(user):
        def call() -> str:
            try:
                return approval_decide(approval_id=approval.pk, decided_by=user, approve=True).status
            except AlreadyDecided:
                return "already_decided"

        return call

    outcomes = at_once(*(vote(user) for user in voters))

    assert sorted(outcomes) == ["already_decided", "approved", "pending"]
    assert [run.attempt for run in outbox.runs()] == [2]
    plan = Plan.objects.get(pk=approval.plan_id)
    assert plan.events.filter(type="approval.resolved").count() == 1
    assert plan.events.filter(type="approval.voted").count() == 2


def test_a_rule_gates_an_llm_agents_worker_tool_that_needs_no_approval(policy, fake_openai, settings, tmp_path):
    policy(
        {
            "name": "no reads of secrets",
            "match": {"tool": "read_file", "arguments": {"path": "secret*"}},
            "decision": "ask",
        }
    )
    settings.EXECUTION_WORKSPACE_DIR = str(tmp_path)
    (tmp_path / "notes.txt").write_text("milk")
    llm = agent_from_definition("llm", fake_openai.agent_definition(tools=[READ_FILE]))
    calls = [
        tool_call("read_file", {"path": "notes.txt"}, id="r1"),
        tool_call("read_file", {"path": "secret.txt"}, id="r2"),
    ]
    fake_openai.script(completion(tool_calls=calls))

    step = llm.run(context(agent="llm"))

    # The call no rule fits ran at once; the other waits for a person, as the rule asks.
    assert isinstance(step, ToolCalls)
    assert [(call.tool, call.arguments, call.call_id) for call in step.calls] == [
        ("read_file", {"path": "secret.txt"}, "r2")
    ]
    assert step.conversation[-1] == {"role": "tool", "tool_call_id": "r1", "content": "milk"}
