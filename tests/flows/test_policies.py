"""Approval policies with real workers: rules decide or deny at once, votes reach a quorum once, who may vote.

The workers and the web process read tests/support/policy.json (tests/conftest.py), whose rules fit
only tools named policy_*; this process reads it too.
"""

from collections import Counter

import pytest
from django.contrib.auth.models import Group

from approvals.models import Approval
from plans.models import PlanStatus
from tests.conftest import POLICY_FILE
from tests.fakes.openai_server import completion, tool_call
from tests.support.clients import HttpCaller, LocalCaller, approver, at_once
from tests.support.factories import UserFactory, subtask
from tests.support.flows import finished, pending_approval, start
from tests.support.invariants import assert_invariants

pytestmark = pytest.mark.usefixtures("engine")

APPROVALS = "/api/v1/approvals"
DEPLOY = {"tool_calls": [{"tool": "policy_deploy", "arguments": {"env": "prod"}}]}


@pytest.fixture(autouse=True)
def _policy(settings) -> None:
    settings.APPROVALS_POLICY_FILE = str(POLICY_FILE)


def deployers(count: int) -> list:
    group, _ = Group.objects.get_or_create(name="policy-deployers")
    users = [UserFactory() for _ in range(count)]
    group.user_set.add(*users)
    return users


def test_three_votes_at_once_reach_a_quorum_of_two_once(web):
    alice, bob, carol = deployers(3)
    plan = start(subtask("deploy", input=DEPLOY), subtask("after", "deploy"))
    approval = pending_approval(plan, "deploy")
    assert (approval.quorum, approval.approvers) == (2, ["group:policy-deployers"])
    callers = [HttpCaller(web.url, alice), LocalCaller(bob), LocalCaller(carol)]

    answers = at_once(*(lambda c=caller: c.post(f"{APPROVALS}/{approval.pk}/approve/") for caller in callers))

    assert Counter(answer.status for answer in answers) == {200: 2, 409: 1}
    assert sorted(answer.body["status"] for answer in answers if answer.status == 200) == ["approved", "pending"]
    [late] = [answer for answer in answers if answer.status == 409]
    assert (late.code, late.body["error"]["details"]) == ("already_decided", {"status": "approved"})
    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    assert_invariants(plan)
    assert plan.subtasks.get(key="deploy").attempts == 2  # the first run, and one resume
    assert plan.events.filter(type="approval.resolved").count() == 1
    assert plan.events.filter(type="approval.voted").count() == 2
    decided = LocalCaller(alice).get(f"{APPROVALS}/{approval.pk}/").body
    assert (decided["channel"], decided["policy"]) == ("api", {"rule": "two deployers", "decision": "ask"})
    assert [vote["decision"] for vote in decided["votes"]] == ["approve", "approve"]


def test_a_reject_after_an_approve_decides_at_once(web):
    alice, bob = deployers(2)
    plan = start(subtask("deploy", input=DEPLOY))
    approval = pending_approval(plan, "deploy")

    first = HttpCaller(web.url, alice).post(f"{APPROVALS}/{approval.pk}/approve/")
    assert (first.status, first.body["status"], first.body["votes"][0]["user"]) == (200, "pending", alice.username)
    veto = HttpCaller(web.url, bob).post(f"{APPROVALS}/{approval.pk}/reject/", {"reason": "freeze week"})

    assert (veto.status, veto.body["status"], veto.body["reason"]) == (200, "rejected", "freeze week")
    plan = finished(plan)
    assert plan.status == PlanStatus.FAILED
    assert "freeze week" in plan.subtasks.get().error


def test_the_owner_is_refused_a_non_approver_is_refused_and_an_outsider_sees_nothing(web):
    owner = UserFactory()
    (deployer,) = deployers(1)
    Group.objects.get(name="policy-deployers").user_set.add(owner)
    plan = start(subtask("deploy", input=DEPLOY), owner=owner)
    approval = pending_approval(plan, "deploy")
    vote = f"{APPROVALS}/{approval.pk}/approve/"

    separated = HttpCaller(web.url, owner).post(vote)
    assert (separated.status, separated.code) == (403, "permission_denied")
    assert separated.body["error"]["details"] == {"reason": "requester_cannot_approve"}
    decider = HttpCaller(web.url, approver("policy-decider")).post(vote)
    assert (decider.status, decider.body["error"]["details"]) == (403, {"reason": "not_an_approver"})
    outsider = HttpCaller(web.url, UserFactory()).post(vote)
    assert (outsider.status, outsider.code) == (404, "not_found")

    # The designated approver sees the plan, read-only.
    as_deployer = HttpCaller(web.url, deployer)
    assert as_deployer.get(f"/api/v1/plans/{plan.pk}/").status == 200
    assert as_deployer.post(f"/api/v1/plans/{plan.pk}/cancel/").status == 403
    assert Approval.objects.get(pk=approval.pk).votes.count() == 0


def test_rules_decide_at_once_even_a_call_marked_as_needing_no_approval():
    plan = start(
        subtask("read", input={"tool_calls": [{"tool": "policy_read_file", "arguments": {"path": "a"}}]}),
        subtask(
            "rm",
            "read",
            input={
                "tool_calls": [{"tool": "policy_shell", "arguments": {"cmd": "rm -rf /"}, "requires_approval": False}]
            },
        ),
    )
    plan = finished(plan)

    read, rm = (plan.approvals.get(subtask__key=key) for key in ("read", "rm"))
    assert (read.status, read.channel, read.decided_by) == ("approved", "policy", None)
    assert (rm.status, rm.channel, rm.reason) == ("rejected", "policy", "no rm under this policy")
    assert plan.status == PlanStatus.FAILED
    assert "no rm under this policy" in plan.subtasks.get(key="rm").error
    assert plan.subtasks.get(key="read").status == "done"


def test_an_llm_agents_calls_under_rules_a_worker_tool_denied_and_a_client_tool_allowed_waits_for_its_result(
    fake_openai, test_agents, settings
):
    settings.EXECUTION_AGENTS_FILE = str(test_agents.path)
    calls = [
        tool_call("read_file", {"path": "policy-secret.txt"}, id="r1"),
        tool_call("write_file", {"path": "policy-notes.txt", "content": "hi"}, id="w1"),
    ]
    fake_openai.script(completion(tool_calls=calls), completion("Done as allowed."), match="Policy read")
    plan = start(subtask("read", agent="llm", description="Policy read"))

    # read_file needs no approval, but a rule denies it; write_file runs on the client, so an allow
    # rule leaves it pending for the result, and one approve by the owner decides it.
    write = pending_approval(plan, "read")
    assert (write.tool, write.policy) == (
        "write_file",
        {"rule": "policy writes", "decision": "allow"},
    )
    read = plan.approvals.get(tool="read_file")
    assert (read.status, read.channel, read.reason) == ("rejected", "policy", "not for models")
    approve = LocalCaller(plan.owner).post(f"{APPROVALS}/{write.pk}/approve/", {"result": "written"})
    assert (approve.status, approve.body["status"], approve.body["channel"]) == (200, "approved", "api")

    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    messages = fake_openai.requests(match="Policy read")[1]["body"]["messages"]
    answers = {message["tool_call_id"]: message["content"] for message in messages if message["role"] == "tool"}
    assert "not for models" in answers["r1"]
    assert answers["w1"] == "written"
