"""Revisions in the admin: a draft's revisions with their diffs, the diff and picture beside a plan approval, and the
Request changes button."""

import pytest
from django.urls import reverse

from approvals.models import Approval, ApprovalKind, ApprovalStatus
from execution.services import plan_revise, plan_submit
from plans.models import Plan, PlanStatus
from tests.desk.support import client_for, waiting_tool_call
from tests.desk.test_approvals import change_url, messages_of
from tests.support.factories import plan_data, subtask

pytestmark = pytest.mark.django_db

HOSTILE = "<script>alert('x')</script>"


def revised_draft(owner) -> Plan:
    """A draft revised twice: b removed, c changed, d added, then its goal and metadata changed."""
    plan = plan_submit(owner=owner, data=plan_data(subtask("a"), subtask("b", "a"), subtask("c", "a")))
    plan_revise(
        plan_id=plan.pk,
        author=owner,
        changes={
            "subtasks": [
                subtask("a"),
                subtask("c", "a", description=f"Do c {HOSTILE}", input={"result": "new"}),
                subtask("d", "c", description=f"New {HOSTILE}"),
            ]
        },
    )
    plan_revise(plan_id=plan.pk, author=owner, changes={"goal": "Better goal", "metadata": {"note": HOSTILE}})
    return Plan.objects.get(pk=plan.pk)


def plan_approval(plan: Plan) -> Approval:
    return Approval.objects.get(plan=plan, kind=ApprovalKind.PLAN, status=ApprovalStatus.PENDING)


def test_a_drafts_page_shows_its_revisions_newest_first_with_each_diff_escaped(owner):
    plan = revised_draft(owner)
    html = client_for(owner).get(reverse("admin:plans_plan_change", args=[plan.pk])).content.decode()

    sections = [html.index(f'data-revision="{number}"') for number in (3, 2, 1)]
    assert sections == sorted(sections)
    second = html[sections[1] : sections[2]]
    assert 'class="diff-added" data-key="d"' in second
    assert 'class="diff-removed" data-key="b"' in second
    assert 'data-subject="subtask c"' in second
    assert '<tr data-field="description"><th>description</th><td class="diff-before">Do c</td>' in second
    assert "Do c &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in second
    assert '<tr data-field="input">' in second
    third = html[sections[0] : sections[1]]
    assert 'data-subject="the plan"' in third
    assert '<td class="diff-before">Test goal</td><td class="diff-after">Better goal</td>' in third
    assert HOSTILE not in html


def test_beside_a_pending_plan_approval_the_diff_from_the_previous_revision_and_the_outlined_picture(approver, owner):
    plan = plan_submit(owner=owner, data=plan_data(subtask("a"), subtask("b", "a")))
    approval = plan_approval(plan)
    client_for(approver).post(
        change_url(approval), {"_request_changes": "Request changes", "reason": f"No b {HOSTILE}"}
    )
    plan_revise(
        plan_id=plan.pk, author=owner, changes={"subtasks": [subtask("a", description="Do a well"), subtask("c", "a")]}
    )

    html = client_for(approver).get(change_url(plan_approval(plan))).content.decode()

    assert "Revision 2, from revision 1:" in html
    assert "No b &lt;script&gt;" in html  # what was asked for, beside what changed
    assert 'class="diff-added" data-key="c"' in html
    assert 'class="diff-removed" data-key="b"' in html
    assert '<td class="diff-before">Do a</td><td class="diff-after">Do a well</td>' in html
    assert 'data-key="c" data-status="pending" data-change="added"' in html
    assert 'data-key="a" data-status="pending" data-change="changed"' in html
    assert 'name="_request_changes"' in html
    assert HOSTILE not in html


def test_a_tool_call_has_no_revision_and_no_request_changes_button(owner):
    html = client_for(owner).get(change_url(waiting_tool_call(owner))).content.decode()
    assert "what this revision changed" not in html
    assert 'name="_request_changes"' not in html


def test_request_changes_asks_for_the_reason_then_keeps_the_plan_a_draft(approver, owner):
    plan = plan_submit(owner=owner, data=plan_data(subtask("a")))
    approval = plan_approval(plan)
    client = client_for(approver)

    asked = client.post(change_url(approval), {"_request_changes": "Request changes", "reason": "  "})
    assert asked.status_code == 200
    assert "Say what should change" in asked.content.decode()
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING

    response = client.post(
        change_url(approval), {"_request_changes": "Request changes", "reason": "Split a in two"}, follow=True
    )

    assert messages_of(response)[0].startswith("Sent back for changes: plan")
    approval.refresh_from_db()
    assert (approval.status, approval.reason, approval.decided_by) == (
        ApprovalStatus.REJECTED,
        "Split a in two",
        approver,
    )
    plan.refresh_from_db()
    assert plan.status == PlanStatus.DRAFT
    assert plan.events.get(type="plan.changes_requested").payload["reason"] == "Split a in two"
    page = client.get(reverse("admin:plans_plan_change", args=[plan.pk])).content.decode()
    assert "Changes requested</strong> by approver" in page
    assert "Split a in two" in page


def test_request_changes_forged_for_a_tool_call_decides_nothing(owner):
    approval = waiting_tool_call(owner)
    response = client_for(owner).post(
        change_url(approval), {"_request_changes": "Request changes", "reason": "no"}, follow=True
    )
    assert messages_of(response)[0].startswith("Not decided: Only a plan approval can ask for changes")
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING


def test_the_plan_pages_approve_button_approves_only_the_revision_it_showed(owner):
    plan = plan_submit(owner=owner, data=plan_data(subtask("a"), auto_execute=False))
    client = client_for(owner)
    page = client.get(reverse("admin:plans_plan_change", args=[plan.pk])).content.decode()
    assert '<input type="hidden" name="revision" value="1">' in page
    plan_revise(plan_id=plan.pk, author=owner, changes={"goal": "Changed meanwhile"})
    operate = reverse("admin:plans_plan_operate", args=[plan.pk, "approve"])

    response = client.post(operate, {"revision": "1"}, follow=True)

    assert "at revision 2 now" in messages_of(response)[0]
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.DRAFT
    client.post(operate, {"revision": "2"})
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.APPROVED


def test_a_decided_plan_approval_shows_the_revision_it_was_asked_for(approver, owner):
    plan = plan_submit(owner=owner, data=plan_data(subtask("a")))
    first = plan_approval(plan)
    client = client_for(approver)
    client.post(change_url(first), {"_request_changes": "Request changes", "reason": "Add b"})
    plan_revise(plan_id=plan.pk, author=owner, changes={"subtasks": [subtask("a"), subtask("b")]})
    second = plan_approval(plan)
    plan_revise(plan_id=plan.pk, author=owner, changes={"goal": "Third"})

    old = client.get(change_url(first)).content.decode()
    assert "Revision 1, as submitted. The plan is at revision 3 now." in old
    cancelled = client.get(change_url(second)).content.decode()
    assert "Revision 2, from revision 1: The plan is at revision 3 now." in cancelled
    assert 'class="diff-added" data-key="b"' in cancelled
    assert 'data-change="added"' not in cancelled  # the picture is of revision 3, which added nothing
