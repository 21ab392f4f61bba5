"""Plan endpoints: submission errors, shapes, filters, actions and their conflicts, permissions."""

import uuid

import pytest
from django.utils import timezone

from approvals.models import Approval
from execution.models import ExecState
from execution.services import plan_submit
from plans.models import Plan, Subtask
from tests.api.conftest import client_for
from tests.support.factories import plan_data, plan_recount, subtask

pytestmark = pytest.mark.django_db

PLANS = "/api/v1/plans/"


def submit(api, *subtasks, **fields):
    return api.post(PLANS, plan_data(*(subtasks or (subtask("a"),)), **fields), format="json")


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def test_submit_returns_the_plan_with_subtasks(api):
    response = submit(
        api,
        subtask("a", input={"result": 1}),
        subtask("b", "a", max_retries=1, timeout_s=30),
        session_id="chat-1",
        metadata={"ide": "vscode"},
    )
    assert response.status_code == 201
    plan = response.json()
    assert response["Location"] == f"{PLANS}{plan['id']}/"
    assert plan["status"] == "draft"
    assert plan["execution"] is None
    assert plan["execution_state"] is None
    assert (plan["session_id"], plan["metadata"], plan["owner"]) == ("chat-1", {"ide": "vscode"}, "owner")
    assert (plan["max_parallel"], plan["failure_policy"], plan["requires_approval"], plan["auto_execute"]) == (
        3,
        "fail_fast",
        True,
        True,
    )
    a, b = plan["subtasks"]
    assert (a["key"], a["status"], a["agent"], a["depends_on"], a["input"], a["attempts"]) == (
        "a",
        "pending",
        "script",
        [],
        {"result": 1},
        0,
    )
    assert (b["key"], b["depends_on"], b["max_retries"], b["timeout_s"], b["batch_index"]) == ("b", ["a"], 1, 30, 1)
    for field in ("result", "error", "started_at", "completed_at", "description", "id"):
        assert field in a
    assert Approval.objects.get(plan_id=plan["id"]).kind == "plan"


def test_submit_without_approval_starts_at_once(api):
    plan = submit(api, requires_approval=False).json()
    assert plan["status"] == "in_progress"
    assert plan["execution"]["state"] == "running"
    assert plan["subtasks"][0]["status"] == "queued"


@pytest.mark.parametrize(
    ("subtasks", "fields", "code", "details"),
    [
        ([subtask("a"), subtask("a")], {}, "duplicate_key", {"keys": ["a"]}),
        ([subtask("a", "ghost")], {}, "unknown_dependency", {"subtasks": {"a": ["ghost"]}}),
        ([subtask("a", agent="wizard")], {}, "unknown_agent", None),
        ([subtask("a", "b"), subtask("b", "a")], {}, "cyclic_dependencies", None),
        ([subtask("a")], {"max_parallel": 100}, "validation_error", None),
        ([subtask("a", input={"sleep_ms": "long"})], {}, "validation_error", None),
    ],
)
def test_bad_plans_get_their_error_code(api, subtasks, fields, code, details):
    error = assert_error(submit(api, *subtasks, **fields), 400, code)
    if details is not None:
        assert error["details"] == details
    assert not Plan.objects.exists()


def test_a_cycle_is_listed_in_the_details(api):
    error = assert_error(
        submit(api, subtask("a", "c"), subtask("b", "a"), subtask("c", "b")), 400, "cyclic_dependencies"
    )
    assert sorted(error["details"]["cycle"]) == ["a", "b", "c"]


def test_too_many_subtasks(api, settings):
    settings.PLANS_MAX_SUBTASKS = 2
    error = assert_error(submit(api, subtask("a"), subtask("b"), subtask("c")), 400, "too_many_subtasks")
    assert error["details"] == {"limit": 2, "count": 3}


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"plan"'])
def test_malformed_bodies_are_validation_errors(api, body):
    assert_error(api.post(PLANS, body, content_type="application/json"), 400, "validation_error")


def test_field_errors_name_the_field(api):
    error = assert_error(
        api.post(PLANS, {"goal": "", "subtasks": [{"key": "a"}]}, format="json"), 400, "validation_error"
    )
    assert {"goal", "subtasks[0].description", "subtasks[0].agent"} <= set(error["details"])


def test_callback_url_needs_webhooks_configured(api, settings):
    settings.WEBHOOK_SECRET = ""
    error = assert_error(submit(api, callback_url="https://example.com/hook"), 400, "validation_error")
    assert "callback_url" in error["details"]


def test_list_is_paginated_and_filtered(api, owner, stranger):
    first = submit(api, session_id="s1").json()
    submit(api, session_id="s2")
    started = submit(api, session_id="s1", requires_approval=False).json()
    submit(client_for(stranger), session_id="s1")

    page = api.get(PLANS).json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 3
    assert page["results"][0]["id"] == started["id"]  # newest first
    assert "subtasks" not in page["results"][0]

    assert {p["id"] for p in api.get(PLANS, {"session_id": "s1"}).json()["results"]} == {first["id"], started["id"]}
    assert [p["id"] for p in api.get(PLANS, {"status": "in_progress"}).json()["results"]] == [started["id"]]
    assert [p["id"] for p in api.get(PLANS, {"execution_state": "running"}).json()["results"]] == [started["id"]]
    assert api.get(PLANS, {"page_size": 1}).json()["next"]
    assert_error(api.get(PLANS, {"status": "bogus"}), 400, "validation_error")


def test_detail_and_status_use_a_constant_number_of_queries(api, owner, django_assert_max_num_queries):
    small = submit(api, subtask("a"), requires_approval=False).json()["id"]
    many = [subtask(f"s{i}", *([f"s{i - 1}"] if i else [])) for i in range(60)]
    large = submit(api, *many, requires_approval=False).json()["id"]
    for plan_id in (small, large):
        with django_assert_max_num_queries(7):  # one of them lists the grants in force
            assert api.get(f"{PLANS}{plan_id}/").status_code == 200
        with django_assert_max_num_queries(5):
            assert api.get(f"{PLANS}{plan_id}/status/").status_code == 200
    detail = api.get(f"{PLANS}{large}/").json()
    assert detail["subtasks"][5]["depends_on"] == ["s4"]


def test_status_counts_add_up(api):
    plan_id = submit(api, subtask("a"), subtask("b"), subtask("c", "a"), requires_approval=False).json()["id"]
    Subtask.objects.filter(plan_id=plan_id, key="a").update(status="done")
    plan_recount(plan_id=plan_id)
    body = api.get(f"{PLANS}{plan_id}/status/").json()
    assert set(body) == {"plan_id", "status", "state", "progress", "current_subtasks", "started_at", "completed_at"}
    assert (body["plan_id"], body["status"], body["state"]) == (plan_id, "in_progress", "running")
    progress = body["progress"]
    assert progress == {
        "total": 3,
        "done": 1,
        "failed": 0,
        "running": 0,
        "pending": 2,
        "waiting_approval": 0,
        "skipped": 0,
        "cancelled": 0,
        "percentage": 33.3,
    }
    assert body["current_subtasks"] == ["b"]


def test_approve_then_approve_again_is_a_conflict(api):
    plan_id = submit(api, auto_execute=False).json()["id"]
    response = api.post(f"{PLANS}{plan_id}/approve/")
    assert response.status_code == 200
    assert response.json()["status"] == "approved"
    error = assert_error(api.post(f"{PLANS}{plan_id}/approve/"), 409, "invalid_state")
    assert error["details"] == {"current_status": "approved"}


def test_execute_starts_an_approved_plan_only(api):
    plan_id = submit(api, auto_execute=False).json()["id"]
    assert_error(api.post(f"{PLANS}{plan_id}/execute/"), 409, "invalid_state")
    api.post(f"{PLANS}{plan_id}/approve/")
    body = api.post(f"{PLANS}{plan_id}/execute/").json()
    assert (body["status"], body["execution"]["state"]) == ("in_progress", "running")
    assert_error(api.post(f"{PLANS}{plan_id}/execute/"), 409, "invalid_state")


def test_cancel_with_a_reason_then_cancel_again_is_a_conflict(api):
    plan_id = submit(api, requires_approval=False).json()["id"]
    body = api.post(f"{PLANS}{plan_id}/cancel/", {"reason": "not needed"}, format="json").json()
    assert body["status"] == "cancelled"
    assert body["execution"]["state"] == "cancelled"
    assert body["subtasks"][0]["status"] == "cancelled"
    error = assert_error(api.post(f"{PLANS}{plan_id}/cancel/"), 409, "invalid_state")
    assert error["details"] == {"current_status": "cancelled"}
    history = api.get(f"{PLANS}{plan_id}/history/").json()["results"]
    assert history[-1]["to_state"] == "cancelled"
    assert history[-1]["reason"] == "not needed"


def test_a_draft_plan_can_be_cancelled_and_its_approval_is_voided(api):
    plan_id = submit(api).json()["id"]
    assert api.post(f"{PLANS}{plan_id}/cancel/").json()["status"] == "cancelled"
    assert Approval.objects.get(plan_id=plan_id).status == "cancelled"


def test_pause_and_resume(api):
    plan_id = submit(api, requires_approval=False).json()["id"]
    assert api.post(f"{PLANS}{plan_id}/pause/").json()["execution_state"] == "paused"
    error = assert_error(api.post(f"{PLANS}{plan_id}/pause/"), 409, "invalid_state")
    assert error["details"] == {"current_status": "paused"}
    assert api.post(f"{PLANS}{plan_id}/resume/").json()["execution_state"] == "running"
    assert_error(api.post(f"{PLANS}{plan_id}/resume/"), 409, "invalid_state")
    draft = submit(api).json()["id"]
    assert_error(api.post(f"{PLANS}{draft}/pause/"), 409, "invalid_state")


def test_retry_needs_a_failed_subtask(api):
    plan_id = submit(api, subtask("a"), subtask("b", "a"), requires_approval=False).json()["id"]
    error = assert_error(api.post(f"{PLANS}{plan_id}/subtasks/a/retry/"), 409, "invalid_state")
    assert error["details"] == {"current_status": "queued"}
    assert_error(api.post(f"{PLANS}{plan_id}/subtasks/nope/retry/"), 404, "not_found")

    Subtask.objects.filter(plan_id=plan_id, key="a").update(status="failed", error="boom", completed_at=timezone.now())
    plan_recount(plan_id=plan_id)
    body = api.post(f"{PLANS}{plan_id}/subtasks/a/retry/").json()
    a = next(s for s in body["subtasks"] if s["key"] == "a")
    assert (a["status"], a["error"]) == ("queued", "")


def test_history_is_oldest_first(api):
    plan_id = submit(api, requires_approval=False).json()["id"]
    api.post(f"{PLANS}{plan_id}/pause/")
    history = api.get(f"{PLANS}{plan_id}/history/").json()["results"]
    assert [(h["from_state"], h["to_state"]) for h in history] == [("preparing", "running"), ("running", "paused")]
    assert set(history[0]) == {"id", "from_state", "to_state", "reason", "actor", "metadata", "created_at"}
    assert history[1]["actor"] == "owner"


def test_events_after_a_sequence_number(api):
    plan_id = submit(api, requires_approval=False).json()["id"]
    events = api.get(f"{PLANS}{plan_id}/events/").json()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "plan.created"
    assert all(e["payload"]["plan_id"] == plan_id for e in events)
    later = api.get(f"{PLANS}{plan_id}/events/", {"after": 3}).json()
    assert [e["seq"] for e in later] == [e["seq"] for e in events[3:]]
    assert api.get(f"{PLANS}{plan_id}/events/", {"after": 1, "limit": 2}).json()[0]["seq"] == 2
    assert_error(api.get(f"{PLANS}{plan_id}/events/", {"after": "x"}), 400, "validation_error")


def test_unknown_plan_is_not_found(api):
    assert_error(api.get(f"{PLANS}{uuid.uuid4()}/"), 404, "not_found")
    assert_error(api.get(f"{PLANS}not-a-uuid/"), 404, "not_found")
    assert_error(api.get("/api/v1/nothing-here/"), 404, "not_found")


class TestPermissions:
    """Owner acts; others get 404; approvers see and approve but do not operate; anonymous gets 401."""

    @pytest.fixture
    def plan(self, owner):
        return plan_submit(owner=owner, data=plan_data(subtask("a"), auto_execute=False))

    def test_anonymous_gets_401(self, plan):
        anonymous = client_for()
        assert_error(anonymous.get(PLANS), 401, "not_authenticated")
        assert_error(anonymous.get(f"{PLANS}{plan.pk}/"), 401, "not_authenticated")
        assert_error(anonymous.post(PLANS, plan_data(subtask("a")), format="json"), 401, "not_authenticated")
        assert anonymous.get(PLANS)["WWW-Authenticate"] == "Token"

    @pytest.mark.parametrize("who", ["stranger", "staff"])
    def test_others_get_404_everywhere(self, plan, request, who):
        other = client_for(request.getfixturevalue(who))
        assert other.get(PLANS).json()["count"] == 0
        for path in ("", "status/", "history/", "events/"):
            assert_error(other.get(f"{PLANS}{plan.pk}/{path}"), 404, "not_found")
        for path in ("approve/", "execute/", "cancel/", "pause/", "resume/", "subtasks/a/retry/"):
            assert_error(other.post(f"{PLANS}{plan.pk}/{path}"), 404, "not_found")
        plan.refresh_from_db()
        assert plan.status == "draft"

    def test_approver_sees_and_approves_but_does_not_operate(self, plan, approver):
        client = client_for(approver)
        assert client.get(f"{PLANS}{plan.pk}/").status_code == 200
        assert client.get(PLANS).json()["count"] == 1
        assert client.post(f"{PLANS}{plan.pk}/approve/").json()["status"] == "approved"
        assert_error(client.post(f"{PLANS}{plan.pk}/execute/"), 403, "permission_denied")
        assert_error(client.post(f"{PLANS}{plan.pk}/cancel/"), 403, "permission_denied")

    def test_owner_operates(self, plan, api):
        assert api.post(f"{PLANS}{plan.pk}/approve/").status_code == 200
        assert api.post(f"{PLANS}{plan.pk}/execute/").json()["execution"]["state"] == ExecState.RUNNING


def test_each_subtask_of_the_detail_carries_its_conversation_and_usage(api):
    plan_id = submit(api, subtask("a"), requires_approval=False).json()["id"]
    messages = [{"role": "user", "content": "Do a"}, {"role": "assistant", "content": "Done."}]
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "steps": [{"prompt_tokens": 5, "completion_tokens": 2}]}
    Subtask.objects.filter(plan_id=plan_id, key="a").update(conversation=messages, usage=usage)
    [a] = api.get(f"{PLANS}{plan_id}/").json()["subtasks"]
    assert (a["conversation"], a["usage"]) == (messages, usage)
