"""The admin and grants and votes: remember on the decision form, the grants list and revoking, "awaiting my vote"."""

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from approvals.models import Approval, Grant
from approvals.services import approval_decide
from tests.desk.support import client_for, waiting_tool_call

pytestmark = pytest.mark.django_db

APPROVALS = reverse("admin:approvals_approval_changelist")
GRANTS = reverse("admin:approvals_grant_changelist")


def test_approving_on_the_page_can_remember_the_call_for_the_plan(owner):
    approval = waiting_tool_call(owner, arguments={"path": "a.dart"})
    client = client_for(owner)
    change = reverse("admin:approvals_approval_change", args=[approval.pk])
    assert 'name="remember"' in client.get(change).content.decode()

    client.post(change, {"_approve": "Approve", "reason": "", "remember": "plan"}, follow=True)

    grant = Grant.objects.get()
    assert (grant.plan_id, grant.tool, grant.scope, grant.created_by) == (approval.plan_id, "write_file", "plan", owner)
    listed = client_for(owner).get(GRANTS)
    assert [row.pk for row in listed.context["cl"].result_list] == [grant.pk]


def test_a_rejection_on_the_page_ignores_remember(owner):
    approval = waiting_tool_call(owner)
    change = reverse("admin:approvals_approval_change", args=[approval.pk])
    client_for(owner).post(change, {"_reject": "Reject", "reason": "no", "remember": "plan"}, follow=True)
    approval.refresh_from_db()
    assert approval.status == "rejected"
    assert not Grant.objects.exists()


def test_revoking_in_the_admin_goes_through_the_service_and_bystanders_do_not_see_it(owner, bystander, approver):
    approval = waiting_tool_call(owner)
    approval_decide(approval_id=approval.pk, decided_by=owner, approve=True, remember="plan")
    grant = Grant.objects.get()
    assert list(client_for(bystander).get(GRANTS).context["cl"].result_list) == []

    delete = reverse("admin:approvals_grant_delete", args=[grant.pk])
    response = client_for(approver).post(delete, {"post": "yes"}, follow=True)

    assert response.status_code == 200
    assert not Grant.objects.exists()
    assert approval.plan.events.filter(type="grant.revoked").count() == 1


def test_awaiting_my_vote_and_who_may_still_vote(owner, approver):
    group, _ = Group.objects.get_or_create(name="reviewers")
    group.user_set.add(approver)
    mine = waiting_tool_call(owner, tool="deploy")
    Approval.objects.filter(pk=mine.pk).update(approvers=["user:owner", "group:reviewers"], quorum=2)
    approval_decide(approval_id=mine.pk, decided_by=owner, approve=True)

    for_owner = client_for(owner).get(APPROVALS + "?awaiting=me")
    assert list(for_owner.context["cl"].result_list) == []  # voted already
    for_approver = client_for(approver).get(APPROVALS + "?awaiting=me")
    assert [row.pk for row in for_approver.context["cl"].result_list] == [mine.pk]
    html = for_approver.content.decode()
    assert "awaiting my vote" in html
    assert "group reviewers (voted: owner)" in html
    assert "1 of 2" in html
