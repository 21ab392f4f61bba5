"""CSRF on the desk's decisions and operations: a form posted from elsewhere (no token) is refused, nothing changes."""

import pytest
from django.test import Client
from django.urls import reverse

from approvals.models import ApprovalStatus
from plans.models import PlanStatus
from tests.desk.support import running_plan, waiting_tool_call

pytestmark = pytest.mark.django_db


def strict_client(user) -> Client:
    """A logged-in browser whose posts carry no CSRF token unless the test adds one."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf_token(client: Client, url: str) -> str:
    client.get(url)
    return client.cookies["csrftoken"].value


def test_an_approval_decided_without_the_token_is_refused(owner):
    approval = waiting_tool_call(owner)
    url = reverse("admin:approvals_approval_change", args=[approval.pk])
    client = strict_client(owner)
    for decision in ("_approve", "_reject"):
        response = client.post(url, {decision: "yes", "reason": "forged", "arguments": "{}", "result": ""})
        assert response.status_code == 403
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING

    token = csrf_token(client, url)
    client.post(url, {"_approve": "Approve", "reason": "mine", "result": "", "csrfmiddlewaretoken": token})
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.APPROVED


def test_the_approvals_list_actions_without_the_token_are_refused(owner):
    approval = waiting_tool_call(owner)
    response = strict_client(owner).post(
        reverse("admin:approvals_approval_changelist"),
        {"action": "approve_selected", "_selected_action": [str(approval.pk)], "reason": "forged"},
    )
    assert response.status_code == 403
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING


@pytest.mark.parametrize("operation", ["cancel", "pause"])
def test_a_plan_operated_without_the_token_is_refused(owner, operation):
    plan = running_plan(owner)
    url = reverse("admin:plans_plan_operate", args=[plan.pk, operation])
    client = strict_client(owner)
    assert client.post(url, {"reason": "forged"}).status_code == 403
    plan.refresh_from_db()
    assert (plan.status, plan.execution.state) == (PlanStatus.IN_PROGRESS, "running")

    token = csrf_token(client, reverse("admin:plans_plan_change", args=[plan.pk]))
    client.post(url, {"reason": "mine", "csrfmiddlewaretoken": token})
    plan.refresh_from_db()
    assert plan.execution.state == ("cancelled" if operation == "cancel" else "paused")


def test_the_api_with_a_session_but_no_token_is_refused(owner):
    """The API takes the admin's session too, so it holds session requests to the same rule."""
    plan = running_plan(owner)
    client = strict_client(owner)
    response = client.post(f"/api/v1/plans/{plan.pk}/cancel/", {"reason": "forged"}, content_type="application/json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert "CSRF" in response.json()["error"]["message"]
    plan.refresh_from_db()
    assert plan.status == PlanStatus.IN_PROGRESS
