"""Grants with real workers, over HTTP: a remembered call approves the later ones at once, until it is revoked."""

import pytest

from approvals.models import Approval
from plans.models import PlanStatus
from tests.support.clients import HttpCaller
from tests.support.factories import UserFactory, subtask
from tests.support.flows import finished, pending_approval, start
from tests.support.invariants import assert_invariants

pytestmark = pytest.mark.usefixtures("engine")

APPROVALS = "/api/v1/approvals"
TWICE = {
    "tool_calls": [{"tool": "grant_deploy", "arguments": {"n": 1}}, {"tool": "grant_deploy", "arguments": {"n": 2}}]
}
ONCE = {"tool_calls": [{"tool": "grant_deploy", "arguments": {"n": 3}}]}


def channels(plan) -> list[tuple[str, str]]:
    return list(plan.approvals.order_by("requested_at").values_list("status", "channel"))


def test_plan_and_session_grants_approve_later_calls_at_once_until_revoked(web):
    owner = UserFactory()
    client = HttpCaller(web.url, owner)

    # Remembered for the plan: the second call of the subtask is approved by the grant.
    plan = start(subtask("deploy", input=TWICE), owner=owner, session_id="ide-1")
    first = pending_approval(plan, "deploy")
    assert client.post(f"{APPROVALS}/{first.pk}/approve/", {"remember": "plan"}).status == 200
    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    assert channels(plan) == [("approved", "api"), ("approved", "grant")]
    assert_invariants(plan)
    assert plan.subtasks.get().attempts == 3  # the first run and two resumes

    # A plan grant does not reach the next plan of the session; a session grant does.
    second = start(subtask("deploy", input=ONCE), owner=owner, session_id="ide-1")
    asked = pending_approval(second, "deploy")
    assert client.post(f"{APPROVALS}/{asked.pk}/approve/", {"remember": "session"}).status == 200
    assert finished(second).status == PlanStatus.COMPLETED
    third = finished(start(subtask("deploy", input=ONCE), owner=owner, session_id="ide-1"))
    assert (third.status, channels(third)) == (PlanStatus.COMPLETED, [("approved", "grant")])
    [grant] = client.get(f"/api/v1/plans/{third.pk}/").body["grants"]
    assert (grant["scope"], grant["tool"], grant["created_by"]) == ("session", "grant_deploy", owner.username)

    # Revoked: the next call is asked for again.
    assert client.delete(f"/api/v1/grants/{grant['id']}/").status == 204
    fourth = start(subtask("deploy", input=ONCE), owner=owner, session_id="ide-1")
    waiting = pending_approval(fourth, "deploy")
    assert Approval.objects.get(pk=waiting.pk).status == "pending"
    assert client.get(f"/api/v1/plans/{fourth.pk}/").body["grants"] == []
