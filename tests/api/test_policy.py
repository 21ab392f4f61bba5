"""The approval policy over the API: the rules in force for staff, and what an approval shows of its votes and rule."""

import json

import pytest
from django.contrib.auth.models import Group

from execution.services import plan_submit
from tests.api.conftest import client_for
from tests.support.factories import UserFactory, plan_data, subtask

pytestmark = pytest.mark.django_db

RULES = [
    {"name": "plans by two", "match": {"kind": "plan"}, "decision": "ask", "approvers": ["group:leads"], "quorum": 2},
    {"name": "no rm", "match": {"tool": "shell", "arguments": {"cmd": "rm *"}}, "decision": "deny"},
]


@pytest.fixture
def rules(settings, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"rules": RULES}))
    settings.APPROVALS_POLICY_FILE = str(path)
    return path


def test_staff_see_the_rules_in_force_in_order_with_their_defaults(rules, staff, owner):
    answer = client_for(staff).get("/api/v1/policy/")
    assert answer.status_code == 200
    body = answer.json()
    assert body["file"] == str(rules)
    assert [rule["name"] for rule in body["rules"]] == ["plans by two", "no rm"]
    assert body["rules"][0]["separate_requester"] is None
    assert body["rules"][1]["reason"] == "denied by policy no rm"

    refused = client_for(owner).get("/api/v1/policy/")
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "permission_denied")
    assert client_for().get("/api/v1/policy/").status_code == 401


def test_without_a_file_there_are_no_rules(staff):
    assert client_for(staff).get("/api/v1/policy/").json() == {"file": None, "rules": []}


def test_an_approval_shows_its_rule_quorum_approvers_and_votes_and_a_lead_votes(rules, owner, stranger):
    leads = Group.objects.create(name="leads")
    lead, other_lead = UserFactory(username="lead1"), UserFactory(username="lead2")
    leads.user_set.add(lead, other_lead)
    plan = plan_submit(owner=owner, data=plan_data(subtask("a")))
    approval = plan.approvals.get()
    path = f"/api/v1/approvals/{approval.pk}/"

    shown = client_for(lead).get(path).json()
    assert (shown["quorum"], shown["approvers"], shown["policy"]) == (
        2,
        ["group:leads"],
        {"rule": "plans by two", "decision": "ask"},
    )
    assert (shown["votes"], shown["channel"], shown["status"]) == ([], "", "pending")
    assert client_for(lead).get(f"/api/v1/plans/{plan.pk}/").status_code == 200
    assert client_for(stranger).get(path).status_code == 404

    by_owner = client_for(owner).post(f"{path}approve/", {}, format="json")
    assert (by_owner.status_code, by_owner.json()["error"]["details"]) == (403, {"reason": "not_an_approver"})
    edited = client_for(lead).post(f"{path}approve/", {"arguments": {"a": 1}}, format="json")
    assert (edited.status_code, edited.json()["error"]["code"]) == (400, "validation_error")

    first = client_for(lead).post(f"{path}approve/", {"reason": "fine"}, format="json").json()
    assert first["status"] == "pending"
    assert [(v["user"], v["decision"], v["reason"], v["channel"]) for v in first["votes"]] == [
        ("lead1", "approve", "fine", "api")
    ]
    again = client_for(lead).post(f"{path}approve/", {}, format="json")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "already_voted")
    second = client_for(other_lead).post(f"/api/v1/plans/{plan.pk}/approve/", {}, format="json")
    assert second.status_code == 200
    assert second.json()["status"] == "in_progress"  # approved, and started (auto_execute)
    late = client_for(other_lead).post(f"{path}reject/", {"reason": "x"}, format="json")
    assert (late.status_code, late.json()["error"]["code"]) == (409, "already_decided")


def test_the_inbox_lists_what_the_caller_may_still_vote_on_oldest_first(rules, owner, approver):
    lead, other = UserFactory(username="lead1"), UserFactory(username="lead2")
    Group.objects.create(name="leads").user_set.add(lead, other)
    first = plan_submit(owner=owner, data=plan_data(subtask("a"))).approvals.get()
    second = plan_submit(owner=owner, data=plan_data(subtask("b"))).approvals.get()
    client_for(other).post(f"/api/v1/approvals/{second.pk}/approve/", {}, format="json")

    def inbox(user) -> list[str]:
        answer = client_for(user).get("/api/v1/approvals/", {"awaiting": "me"})
        assert answer.status_code == 200
        return [item["id"] for item in answer.json()["results"]]

    assert inbox(lead) == [str(first.pk), str(second.pk)]
    assert inbox(other) == [str(first.pk)]  # voted on the second already
    assert inbox(owner) == []  # the rule names the leads only
    assert inbox(approver) == []


def test_the_inbox_by_default_holds_the_owners_pending_approvals(owner, stranger, settings):
    settings.APPROVALS_SEPARATE_REQUESTER = False
    approval = plan_submit(owner=owner, data=plan_data(subtask("a"))).approvals.get()
    answer = client_for(owner).get("/api/v1/approvals/", {"awaiting": "me"}).json()
    assert [item["id"] for item in answer["results"]] == [str(approval.pk)]
    assert client_for(stranger).get("/api/v1/approvals/", {"awaiting": "me"}).json()["results"] == []


def test_many_votes_at_once_are_each_decided_as_by_their_own_endpoint(rules, owner, stranger):
    lead = UserFactory(username="lead1")
    Group.objects.create(name="leads").user_set.add(lead)
    plan_one = plan_submit(owner=owner, data=plan_data(subtask("a"))).approvals.get()
    rejected = plan_submit(owner=owner, data=plan_data(subtask("b"))).approvals.get()
    strangers = plan_submit(owner=stranger, data=plan_data(subtask("c"))).approvals.get()
    body = {
        "decisions": [
            {"id": str(plan_one.pk), "decision": "approve"},
            {"id": str(rejected.pk), "decision": "reject", "reason": "no"},
            {"id": str(plan_one.pk), "decision": "approve"},
            {"id": "00000000-0000-0000-0000-000000000000", "decision": "approve"},
        ]
    }

    answer = client_for(lead).post("/api/v1/approvals/decide/", body, format="json")

    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [(r["status"], r.get("error", {}).get("code")) for r in results] == [
        ("pending", None),
        ("rejected", None),
        ("pending", "already_voted"),
        (None, "not_found"),
    ]
    refused = client_for(owner).post(
        "/api/v1/approvals/decide/", {"decisions": [{"id": str(plan_one.pk), "decision": "approve"}]}, format="json"
    )
    assert refused.json()["results"][0]["error"]["details"] == {"reason": "not_an_approver"}
    empty = client_for(lead).post("/api/v1/approvals/decide/", {"decisions": []}, format="json")
    assert (empty.status_code, empty.json()["error"]["code"]) == (400, "validation_error")
    no_reason = client_for(lead).post(
        "/api/v1/approvals/decide/", {"decisions": [{"id": str(strangers.pk), "decision": "reject"}]}, format="json"
    )
    assert no_reason.status_code == 400
    assert strangers.votes.count() == 0
