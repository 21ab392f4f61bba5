"""The admin's approval policy page: the rules in force, read-only and escaped."""

import json

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from approvals.services import approval_decide
from execution.services import plan_submit
from tests.desk.support import client_for
from tests.support.factories import UserFactory, plan_data, subtask

pytestmark = pytest.mark.django_db

POLICY = reverse("admin:approvals_policy")


def test_the_policy_page_lists_the_rules_in_order_escaped(superuser, settings, tmp_path):
    path = tmp_path / "policy.json"
    rules = [
        {"name": "<b>deploys</b>", "match": {"tool": "deploy*"}, "decision": "ask", "quorum": 2},
        {"name": "no rm", "match": {"arguments": {"cmd": "rm *"}}, "decision": "deny", "reason": "never"},
    ]
    path.write_text(json.dumps({"rules": rules}))
    settings.APPROVALS_POLICY_FILE = str(path)

    response = client_for(superuser).get(POLICY)

    assert response.status_code == 200
    html = response.content.decode()
    assert "&lt;b&gt;deploys&lt;/b&gt;" in html
    assert "<b>deploys</b>" not in html
    assert html.index("deploys") < html.index("no rm")
    assert "never" in html
    assert reverse("admin:approvals_policy") in client_for(superuser).get(reverse("admin:index")).content.decode()


def test_without_a_file_the_page_says_who_decides(superuser):
    response = client_for(superuser).get(POLICY)
    assert "No <code>APPROVALS_POLICY_FILE</code> is set" in response.content.decode()


def test_the_policy_page_is_for_staff_only(client):
    response = client.get(POLICY)
    assert response.status_code == 302


def test_an_approval_page_shows_its_rule_and_votes_escaped_and_the_queue_the_count(superuser, settings, tmp_path):
    path = tmp_path / "policy.json"
    rule = {"name": "two", "match": {}, "decision": "ask", "approvers": ["group:leads"], "quorum": 2}
    path.write_text(json.dumps({"rules": [rule]}))
    settings.APPROVALS_POLICY_FILE = str(path)
    lead = UserFactory(username="<i>lead</i>")
    Group.objects.create(name="leads").user_set.add(lead)
    approval = plan_submit(owner=superuser, data=plan_data(subtask("a"))).approvals.get()
    approval_decide(approval_id=approval.pk, decided_by=lead, approve=True, reason="<b>fine</b>")

    page = client_for(superuser).get(reverse("admin:approvals_approval_change", args=[approval.pk])).content.decode()
    assert "two (ask)" in page
    assert "&lt;b&gt;fine&lt;/b&gt;" in page
    assert "&lt;i&gt;lead&lt;/i&gt;" in page
    assert "<b>fine</b>" not in page
    queue = client_for(superuser).get(reverse("admin:approvals_approval_changelist")).content.decode()
    assert "1 of 2" in queue
