"""The admin's approval policy page: the rules in force, read-only and escaped."""

import json

import pytest
from django.urls import reverse

from tests.desk.support import client_for

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
