"""The approvals admin: the pending queue, decisions through approval_decide, form errors and who may decide."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from approvals.models import Approval, ApprovalStatus
from approvals.services import approval_decide
from execution.models import ExecState
from execution.services import plan_submit
from plans.models import PlanStatus, SubtaskStatus
from tests.desk.support import client_for, waiting_tool_call
from tests.support.factories import plan_data, subtask

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:approvals_approval_changelist")


def change_url(approval: Approval) -> str:
    return reverse("admin:approvals_approval_change", args=[approval.pk])


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_queue_lists_pending_approvals_first_oldest_first(superuser):
    old, _new, decided = (waiting_tool_call(superuser, tool=tool) for tool in ("old_tool", "new_tool", "done_tool"))
    Approval.objects.filter(pk=old.pk).update(requested_at=timezone.now() - timedelta(hours=2))
    approval_decide(approval_id=decided.pk, decided_by=superuser, approve=True)
    response = client_for(superuser).get(CHANGELIST)
    assert response.status_code == 200
    assert [approval.tool for approval in response.context["cl"].result_list] == ["old_tool", "new_tool", "done_tool"]
    html = response.content.decode().replace("\xa0", " ")
    assert "2 hours" in html  # the age
    assert "in 23 hours" in html  # the expiry
    assert "lib/main.dart" in html  # the arguments
    assert ">coder<" not in html
    assert ">script<" in html


def test_the_queue_filters_by_status_kind_and_plan(superuser):
    tool_call = waiting_tool_call(superuser)
    plan_approval = plan_submit(owner=superuser, data=plan_data(subtask("a"))).approvals.get()
    client = client_for(superuser)

    def found(query: str) -> set:
        return {approval.pk for approval in client.get(CHANGELIST + query).context["cl"].result_list}

    assert found("?kind__exact=plan") == {plan_approval.pk}
    assert found("?kind__exact=tool_call&status__exact=pending") == {tool_call.pk}
    assert found(f"?plan__id__exact={tool_call.plan_id}") == {tool_call.pk}
    assert found("?plan__id__exact=not-a-uuid") == set()


def test_approving_on_the_page_sends_edited_arguments_and_the_result_and_resumes_the_subtask(owner):
    approval = waiting_tool_call(owner, arguments={"path": "a.dart"})
    client = client_for(owner)
    page = client.get(change_url(approval))
    assert 'id="decision-form"' in page.content.decode()

    response = client.post(
        change_url(approval),
        {"_approve": "Approve", "reason": "ok", "arguments": '{"path": "b.dart"}', "result": '{"bytes": 12}'},
        follow=True,
    )
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by, approval.reason) == (ApprovalStatus.APPROVED, owner, "ok")
    assert (approval.edited_arguments, approval.result) == ({"path": "b.dart"}, {"bytes": 12})
    edit = approval.subtask
    edit.refresh_from_db()
    assert edit.status == SubtaskStatus.QUEUED
    assert edit.tool_calls[0]["approved_arguments"] == {"path": "b.dart"}
    assert approval.plan.execution.transitions.last().to_state == ExecState.RESUMED
    assert messages_of(response)[0].startswith("Approved: tool call 'write_file' of subtask 'edit'")


def test_unchanged_arguments_and_an_empty_result_are_no_edit_and_no_result(owner):
    approval = waiting_tool_call(owner, arguments={"path": "a.dart"})
    client_for(owner).post(
        change_url(approval),
        {"_approve": "Approve", "reason": "", "arguments": '{\n  "path": "a.dart"\n}', "result": ""},
    )
    approval.refresh_from_db()
    assert (approval.status, approval.edited_arguments, approval.result) == (ApprovalStatus.APPROVED, None, None)


def test_rejecting_records_the_reason_and_sends_it_to_the_subtask(owner):
    approval = waiting_tool_call(owner)
    client_for(owner).post(change_url(approval), {"_reject": "Reject", "reason": "not that file", "result": ""})
    approval.refresh_from_db()
    assert (approval.status, approval.reason) == (ApprovalStatus.REJECTED, "not that file")
    call = approval.subtask.tool_calls[0]
    assert (call["status"], call["reason"]) == ("rejected", "not that file")


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("result", "{not json", "Enter a valid JSON."),
        ("arguments", "{'single': 'quotes'}", "Enter a valid JSON."),
        ("arguments", "[1, 2]", "The arguments must be a JSON object."),
    ],
)
def test_invalid_json_is_a_form_error_and_nothing_is_decided(owner, field, value, error):
    approval = waiting_tool_call(owner)
    data = {"_approve": "Approve", "reason": "", "arguments": '{"path": "x"}', "result": ""}
    response = client_for(owner).post(change_url(approval), {**data, field: value})
    assert response.status_code == 200
    assert error in response.content.decode()
    if "JSON." in error:
        assert value in response.content.decode().replace("&#x27;", "'")  # the text is kept, to be fixed
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("[" * 20_000 + "]" * 20_000, "nested"),
        ('{"text": "a\\u0000b"}', "NUL"),
    ],
)
def test_json_the_database_cannot_store_is_a_form_error_not_a_server_error(owner, value, error):
    approval = waiting_tool_call(owner)
    data = {"_approve": "Approve", "reason": "", "arguments": '{"path": "x"}', "result": value}
    response = client_for(owner).post(change_url(approval), data)
    assert response.status_code == 200
    assert error in response.content.decode()
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING


def test_a_second_decision_is_a_clear_message(owner):
    approval = waiting_tool_call(owner)
    client = client_for(owner)
    client.post(change_url(approval), {"_approve": "Approve", "result": ""}, follow=True)
    response = client.post(change_url(approval), {"_reject": "Reject", "reason": "too late", "result": ""}, follow=True)
    assert response.status_code == 200
    assert messages_of(response) == [
        "Not decided: the tool call 'write_file' of subtask 'edit' (plan “Edit”) is already approved."
    ]
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.APPROVED


def test_bulk_actions_decide_with_the_reason_and_report_the_already_decided(approver, owner):
    first, second = waiting_tool_call(owner, tool="one"), waiting_tool_call(owner, tool="two")
    approval_decide(approval_id=second.pk, decided_by=owner, approve=True)
    response = client_for(approver).post(
        CHANGELIST,
        {"action": "reject_selected", "_selected_action": [first.pk, second.pk], "reason": "batch says no"},
        follow=True,
    )
    first.refresh_from_db()
    assert (first.status, first.reason, first.decided_by) == (ApprovalStatus.REJECTED, "batch says no", approver)
    assert sorted(messages_of(response)) == [
        "Not decided: the tool call 'two' of subtask 'edit' (plan “Edit”) is already approved.",
        "Rejected: tool call 'one' of subtask 'edit' (plan “Edit”). Reason: batch says no",
    ]


def test_approving_a_plan_approval_approves_the_plan(owner):
    plan = plan_submit(owner=owner, data=plan_data(subtask("a")))
    approval = plan.approvals.get()
    page = client_for(owner).get(change_url(approval)).content.decode()
    assert 'name="reason"' in page
    assert 'name="result"' not in page
    client_for(owner).post(change_url(approval), {"_approve": "Approve", "reason": "go"})
    plan.refresh_from_db()
    assert plan.status == PlanStatus.IN_PROGRESS


# --- who sees and decides what


def actions_offered(client) -> set[str]:
    response = client.get(CHANGELIST)
    form = response.context["action_form"]
    return {name for name, _ in form.fields["action"].choices if name} if form is not None else set()


def test_the_owner_sees_and_decides_the_approvals_of_their_own_plans(owner):
    approval = waiting_tool_call(owner)
    client = client_for(owner)
    assert actions_offered(client) == {"approve_selected", "reject_selected"}
    assert 'id="decision-form"' in client.get(change_url(approval)).content.decode()
    client.post(change_url(approval), {"_approve": "Approve", "result": ""})
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.APPROVED


def test_staff_without_the_permission_neither_see_nor_decide_others_approvals(owner, bystander):
    approval = waiting_tool_call(owner)
    client = client_for(bystander)
    assert client.get(CHANGELIST).context["cl"].result_count == 0
    assert actions_offered(client) == set()
    assert client.get(change_url(approval)).status_code == 302  # "does not exist", as for a missing object
    client.post(change_url(approval), {"_approve": "Approve", "result": ""})
    client.post(CHANGELIST, {"action": "approve_selected", "_selected_action": [approval.pk]})
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING


def test_an_approver_sees_and_decides_every_approval(owner, approver):
    approval = waiting_tool_call(owner)
    client = client_for(approver)
    assert client.get(CHANGELIST).context["cl"].result_count == 1
    assert actions_offered(client) == {"approve_selected", "reject_selected"}
    assert 'id="decision-form"' in client.get(change_url(approval)).content.decode()
    client.post(CHANGELIST, {"action": "approve_selected", "_selected_action": [approval.pk], "reason": ""})
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by) == (ApprovalStatus.APPROVED, approver)


def test_a_decided_approval_shows_no_decision_form(owner):
    approval = waiting_tool_call(owner)
    approval_decide(approval_id=approval.pk, decided_by=owner, approve=False, reason="no")
    html = client_for(owner).get(change_url(approval)).content.decode()
    assert 'id="decision-form"' not in html
    assert "rejected" in html


def test_approvals_cannot_be_added_edited_or_deleted(superuser):
    approval = waiting_tool_call(superuser)
    client = client_for(superuser)
    assert client.get(reverse("admin:approvals_approval_add")).status_code == 403
    assert client.post(reverse("admin:approvals_approval_delete", args=[approval.pk])).status_code == 403
