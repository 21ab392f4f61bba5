"""Hostile actions through the API: late decisions, wrong retries, others' objects, text meant to break things."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals.models import Approval
from approvals.services import approvals_expire_overdue
from execution.services import plan_submit
from plans.models import Plan, Subtask
from tests.api.conftest import client_for
from tests.api.test_approvals import waiting_tool_call
from tests.api.test_hostile_input import nothing_changes
from tests.api.test_plans import PLANS, assert_error
from tests.support.factories import UserFactory, plan_data, subtask

pytestmark = pytest.mark.django_db

APPROVALS = "/api/v1/approvals/"
# SQL, HTML and script, control characters (C0, DEL, C1, bidi override, line separator),
# quotes and backslashes, astral characters: all text a client may send, to be kept as it is.
NASTY = (
    "Robert'); DROP TABLE plans_plan;-- \" OR 1=1 -- <script>alert('x')</script>"
    " <img src=x onerror=alert(1)> {{ 7*7 }} ${7*7} %s %n \\x00 \\\\ \x01\x07\x08\x1b[31m\x7f\x85\u202e\u2028 🎉 \t\r\n"
)
SCRIPT = "<script>alert('x')</script>"


@pytest.fixture
def tool_approval(owner):
    plan = plan_submit(owner=owner, data=plan_data(subtask("a"), requires_approval=False))
    return waiting_tool_call(plan, arguments={"path": "a.txt"})


def test_deciding_an_expired_approval_is_already_decided(api, tool_approval):
    Approval.objects.filter(pk=tool_approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert approvals_expire_overdue() == 1
    for path, body in (("approve/", {"result": "late"}), ("reject/", {"reason": "late"})):
        with nothing_changes():
            error = assert_error(
                api.post(f"{APPROVALS}{tool_approval.pk}/{path}", body, format="json"), 409, "already_decided"
            )
        assert error["details"] == {"status": "expired"}


def test_deciding_an_approval_of_a_cancelled_plan_is_already_decided(api, tool_approval):
    assert api.post(f"{PLANS}{tool_approval.plan_id}/cancel/", {"reason": "stop"}, format="json").status_code == 200
    for path, body in (("approve/", {}), ("reject/", {"reason": "late"})):
        with nothing_changes():
            error = assert_error(
                api.post(f"{APPROVALS}{tool_approval.pk}/{path}", body, format="json"), 409, "already_decided"
            )
        assert error["details"] == {"status": "cancelled"}
    assert Subtask.objects.get(pk=tool_approval.subtask_id).status == "cancelled"


def test_retrying_a_subtask_that_has_not_failed_is_invalid_state(api, tool_approval):
    plan_id = tool_approval.plan_id
    with nothing_changes():
        error = assert_error(api.post(f"{PLANS}{plan_id}/subtasks/a/retry/"), 409, "invalid_state")
    assert error["details"] == {"current_status": "waiting_approval"}
    with nothing_changes():
        assert_error(api.post(f"{PLANS}{plan_id}/subtasks/nope/retry/"), 404, "not_found")


def test_other_users_objects_are_not_found_and_stay_as_they_were(tool_approval, stranger):
    other = client_for(stranger)
    plan_id = tool_approval.plan_id
    with nothing_changes():
        for path in ("", "status/", "history/", "events/"):
            assert_error(other.get(f"{PLANS}{plan_id}/{path}"), 404, "not_found")
        for path in ("approve/", "execute/", "pause/", "resume/", "cancel/", "subtasks/a/retry/"):
            assert_error(other.post(f"{PLANS}{plan_id}/{path}", {}, format="json"), 404, "not_found")
        assert_error(other.get(f"{APPROVALS}{tool_approval.pk}/"), 404, "not_found")
        for path, body in (("approve/", {"result": "mine"}), ("reject/", {"reason": "mine"})):
            assert_error(other.post(f"{APPROVALS}{tool_approval.pk}/{path}", body, format="json"), 404, "not_found")
    assert other.get(PLANS).json()["count"] == 0
    assert other.get(APPROVALS).json()["count"] == 0
    assert other.get(PLANS, {"session_id": ""}).json()["count"] == 0
    assert Approval.objects.get(pk=tool_approval.pk).status == "pending"
    assert Plan.objects.get(pk=plan_id).status == "in_progress"


def test_nasty_text_is_stored_verbatim_and_read_back_equal(api):
    data = plan_data(
        subtask("a", description=NASTY, input={"result": {NASTY: [NASTY, {"nested": NASTY}]}}),
        goal=NASTY,
        session_id=NASTY[:255],
        metadata={NASTY: NASTY, "list": [NASTY]},
    )
    response = api.post(PLANS, data, format="json")
    assert response.status_code == 201, response.content
    plan = api.get(f"{PLANS}{response.json()['id']}/").json()
    assert (plan["goal"], plan["session_id"], plan["metadata"]) == (NASTY, NASTY[:255], data["metadata"])
    assert (plan["subtasks"][0]["description"], plan["subtasks"][0]["input"]) == (NASTY, data["subtasks"][0]["input"])
    # The text as a filter is a value, not SQL: it finds exactly this plan.
    found = api.get(PLANS, {"session_id": NASTY[:255]}).json()["results"]
    assert [each["id"] for each in found] == [plan["id"]]
    assert Plan.objects.count() == 1
    assert api.get(PLANS, {"session_id": "' OR 1=1 --"}).json()["count"] == 0


def test_nasty_text_is_escaped_on_the_admin_pages(owner):
    root = UserFactory(username="root", is_staff=True, is_superuser=True)
    plan = plan_submit(
        owner=owner,
        data=plan_data(
            subtask("a", description=SCRIPT, input={"result": SCRIPT}),
            subtask("b", "a", description=SCRIPT),
            goal=SCRIPT,
            session_id=SCRIPT,
            metadata={SCRIPT: SCRIPT},
            requires_approval=False,
        ),
    )
    approval = waiting_tool_call(plan, tool=SCRIPT, arguments={SCRIPT: SCRIPT})
    Subtask.objects.filter(plan=plan, key="b").update(status="failed", error=SCRIPT, result={SCRIPT: SCRIPT})
    admin = Client()
    admin.force_login(root)
    pages = [
        reverse("admin:plans_plan_change", args=[plan.pk]),
        reverse("admin:plans_plan_changelist"),
        *(reverse("admin:plans_subtask_change", args=[pk]) for pk in plan.subtasks.values_list("pk", flat=True)),
        reverse("admin:plans_subtask_changelist"),
        reverse("admin:approvals_approval_change", args=[approval.pk]),
        reverse("admin:approvals_approval_changelist"),
        reverse("admin:execution_event_changelist"),
    ]
    for page in pages:
        response = admin.get(page)
        assert response.status_code == 200, page
        html = response.content.decode()
        assert "<script>alert(" not in html, page
        assert "&lt;script&gt;alert(" in html, page
