"""Grants over the API: `remember` on an approve vote, the plan's `grants`, DELETE /grants/{id}/."""

import pytest

from approvals.models import Grant
from execution.services import plan_submit
from tests.api.conftest import client_for
from tests.api.test_approvals import waiting_tool_call
from tests.api.test_plans import assert_error
from tests.support.factories import plan_data, subtask

pytestmark = pytest.mark.django_db

APPROVALS = "/api/v1/approvals/"
GRANTS = "/api/v1/grants/"


@pytest.fixture
def plan(owner):
    return plan_submit(
        owner=owner, data=plan_data(subtask("a"), subtask("b"), session_id="chat-9", requires_approval=False)
    )


@pytest.fixture
def tool_approval(plan):
    return waiting_tool_call(plan, arguments={"path": "a.txt"})


@pytest.mark.parametrize("scope", ["plan", "session"])
def test_an_approve_vote_remembers_the_call_and_the_plan_lists_the_grant(api, owner, plan, tool_approval, scope):
    answer = api.post(f"{APPROVALS}{tool_approval.pk}/approve/", {"remember": scope}, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["status"] == "approved"

    [grant] = api.get(f"/api/v1/plans/{plan.pk}/").json()["grants"]
    assert set(grant) == {"id", "tool", "agent", "scope", "created_by", "created_at"}
    assert (grant["tool"], grant["agent"], grant["scope"], grant["created_by"]) == (
        "write_file",
        "script",
        scope,
        owner.username,
    )
    # A plan of the same session lists a session grant, not a plan grant.
    later = plan_submit(owner=owner, data=plan_data(subtask("x"), session_id="chat-9", requires_approval=False))
    listed = api.get(f"/api/v1/plans/{later.pk}/").json()["grants"]
    assert [entry["id"] for entry in listed] == ([grant["id"]] if scope == "session" else [])


def test_remember_must_be_plan_or_session_and_only_with_an_approval(api, tool_approval):
    error = assert_error(
        api.post(f"{APPROVALS}{tool_approval.pk}/approve/", {"remember": "forever"}, format="json"),
        400,
        "validation_error",
    )
    assert "remember" in error["details"]
    bulk = api.post(
        f"{APPROVALS}decide/",
        {"decisions": [{"id": str(tool_approval.pk), "decision": "reject", "reason": "no", "remember": "plan"}]},
        format="json",
    )
    assert_error(bulk, 400, "validation_error")
    tool_approval.refresh_from_db()
    assert tool_approval.status == "pending"


def test_remember_on_a_plan_approval_is_a_validation_error(api, owner):
    draft = plan_submit(owner=owner, data=plan_data(subtask("a")))
    approval = draft.approvals.get()
    error = assert_error(
        api.post(f"{APPROVALS}{approval.pk}/approve/", {"remember": "plan"}, format="json"), 400, "validation_error"
    )
    assert list(error["details"]) == ["remember"]
    approval.refresh_from_db()
    assert (approval.status, approval.votes.count()) == ("pending", 0)


def test_bulk_decisions_remember_too(api, plan, tool_approval):
    answer = api.post(
        f"{APPROVALS}decide/",
        {"decisions": [{"id": str(tool_approval.pk), "decision": "approve", "remember": "plan"}]},
        format="json",
    )
    assert answer.json()["results"] == [{"id": str(tool_approval.pk), "status": "approved"}]
    assert Grant.objects.filter(plan=plan, tool="write_file").count() == 1


def test_delete_revokes_for_the_owner_or_a_decider_and_is_404_for_others(
    api, owner, plan, tool_approval, stranger, approver
):
    api.post(f"{APPROVALS}{tool_approval.pk}/approve/", {"remember": "plan"}, format="json")
    grant = Grant.objects.get()

    assert_error(client_for(stranger).delete(f"{GRANTS}{grant.pk}/"), 404, "not_found")
    assert_error(client_for().delete(f"{GRANTS}{grant.pk}/"), 401, "not_authenticated")
    assert_error(api.delete(f"{GRANTS}not-a-uuid/"), 404, "not_found")
    assert Grant.objects.exists()

    assert client_for(approver).delete(f"{GRANTS}{grant.pk}/").status_code == 204
    assert not Grant.objects.exists()
    assert api.get(f"/api/v1/plans/{plan.pk}/").json()["grants"] == []
    assert_error(api.delete(f"{GRANTS}{grant.pk}/"), 404, "not_found")
    assert plan.events.filter(type="grant.revoked").count() == 1
