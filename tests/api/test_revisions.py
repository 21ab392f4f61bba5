"""Revising a draft through the API, in this process: PATCH, If-Match, revisions and diffs, requests for changes."""

import pytest

from approvals.models import Approval, ApprovalKind, ApprovalStatus
from plans.models import Plan, PlanRevision
from tests.api.conftest import client_for
from tests.api.test_plans import PLANS, assert_error, submit
from tests.support.factories import subtask

pytestmark = pytest.mark.django_db

APPROVALS = "/api/v1/approvals/"


def revise(api, plan_id, changes, if_match=None):
    headers = {} if if_match is None else {"HTTP_IF_MATCH": if_match}
    return api.patch(f"{PLANS}{plan_id}/", changes, format="json", **headers)


def plan_approvals(plan_id):
    return list(
        Approval.objects.filter(plan_id=plan_id, kind=ApprovalKind.PLAN)
        .order_by("requested_at")
        .values_list("status", flat=True)
    )


def events_of(plan_id, *types):
    events = Plan.objects.get(pk=plan_id).events.order_by("seq")
    return [event.payload for event in events if not types or event.type in types]


@pytest.fixture
def draft(api):
    return submit(api, subtask("a"), subtask("b", "a"), subtask("c", "a", input={"result": 1})).json()


def test_a_plan_starts_at_revision_1_with_its_submission_as_content(api, draft):
    assert draft["revision"] == 1
    (first,) = api.get(f"{PLANS}{draft['id']}/revisions/").json()
    assert (first["revision"], first["author"], first["diff"], first["change_requests"]) == (1, "owner", None, [])
    assert [item["key"] for item in first["content"]["subtasks"]] == ["a", "b", "c"]
    assert first["content"]["subtasks"][1] == {
        "key": "b",
        "description": "Do b",
        "agent": "script",
        "depends_on": ["a"],
        "input": {},
        "max_retries": 3,
        "timeout_s": None,
    }
    assert (first["content"]["max_parallel"], first["content"]["requires_approval"]) == (3, True)


def test_a_revision_replaces_the_subtasks_keeps_the_ids_of_kept_keys_and_asks_for_a_new_approval(api, draft):
    ids = {item["key"]: item["id"] for item in draft["subtasks"]}
    subtasks = [subtask("a"), subtask("c", "a", input={"result": 2}), subtask("d", "c")]

    response = revise(api, draft["id"], {"subtasks": subtasks, "goal": "Better goal"})

    assert response.status_code == 200, response.content
    plan = response.json()
    assert (plan["revision"], plan["goal"], plan["status"]) == (2, "Better goal", "draft")
    assert [(item["key"], item["batch_index"], item["depends_on"]) for item in plan["subtasks"]] == [
        ("a", 0, []),
        ("c", 1, ["a"]),
        ("d", 2, ["c"]),
    ]
    assert {item["key"]: item["id"] for item in plan["subtasks"]}.keys() == {"a", "c", "d"}
    assert [item["id"] for item in plan["subtasks"][:2]] == [ids["a"], ids["c"]]
    assert plan_approvals(draft["id"]) == [ApprovalStatus.CANCELLED, ApprovalStatus.PENDING]
    saved = Plan.objects.get(pk=draft["id"])
    assert (saved.subtask_count, saved.pending_count) == (3, 3)
    (revised,) = events_of(draft["id"], "plan.revised")
    assert revised == {"plan_id": draft["id"], "revision": 2, "added": ["d"], "removed": ["b"], "changed": ["c"]}


def test_the_events_of_a_revision_come_in_order(api, draft):
    revise(api, draft["id"], {"max_parallel": 1})
    types = [event.type for event in Plan.objects.get(pk=draft["id"]).events.order_by("seq")]
    assert types[-4:] == ["approval.requested", "plan.revised", "approval.resolved", "approval.requested"]


def test_two_revisions_list_their_exact_diffs(api, draft):
    revise(api, draft["id"], {"subtasks": [subtask("a"), subtask("b", "a", agent="coder"), subtask("c", "a")]})
    revise(api, draft["id"], {"max_parallel": 2, "metadata": {"v": 3}, "subtasks": [subtask("a"), subtask("c")]})

    revisions = api.get(f"{PLANS}{draft['id']}/revisions/").json()

    assert [(r["revision"], r["author"]) for r in revisions] == [(1, "owner"), (2, "owner"), (3, "owner")]
    assert revisions[1]["diff"] == {
        "revision": 2,
        "added": [],
        "removed": [],
        "changed": ["b", "c"],
        "subtask_fields": {"b": ["agent"], "c": ["input"]},
        "plan_fields": [],
    }
    assert revisions[2]["diff"] == {
        "revision": 3,
        "added": [],
        "removed": ["b"],
        "changed": ["c"],
        "subtask_fields": {"c": ["depends_on"]},
        "plan_fields": ["max_parallel", "metadata"],
    }
    assert revisions[2]["content"]["subtasks"] == [
        {
            "key": key,
            "description": f"Do {key}",
            "agent": "script",
            "depends_on": [],
            "input": {},
            "max_retries": 3,
            "timeout_s": None,
        }
        for key in ("a", "c")
    ]
    assert [p["revision"] for p in events_of(draft["id"], "plan.revised")] == [2, 3]


def test_a_change_that_changes_nothing_makes_no_revision(api, draft):
    response = revise(api, draft["id"], {"goal": "Test goal", "session_id": "", "requires_approval": True})
    assert response.json()["revision"] == 1
    assert PlanRevision.objects.filter(plan_id=draft["id"]).count() == 1
    assert plan_approvals(draft["id"]) == [ApprovalStatus.PENDING]
    assert events_of(draft["id"], "plan.revised") == []


@pytest.mark.parametrize(
    ("changes", "status", "code", "details"),
    [
        ({"max_parallel": 0}, 400, "validation_error", {"max_parallel": ["Must be between 1 and 64."]}),
        ({"subtasks": []}, 400, "validation_error", {"subtasks": ["A non-empty list of subtasks is required."]}),
        ({"colour": "red"}, 400, "validation_error", {"colour": ["Unknown field."]}),
        ({"subtasks": [subtask("a", "b"), subtask("b", "a")]}, 400, "cyclic_dependencies", {"cycle": ["a", "b"]}),
        ({"subtasks": [subtask("a"), subtask("a")]}, 400, "duplicate_key", {"keys": ["a"]}),
        ({"subtasks": [subtask("a", "z")]}, 400, "unknown_dependency", {"subtasks": {"a": ["z"]}}),
        (
            {"subtasks": [subtask("a", agent="nobody")]},
            400,
            "unknown_agent",
            {"agents": ["nobody"], "subtasks": {"a": "nobody"}},
        ),
    ],
)
def test_a_bad_revision_answers_as_a_submission_would_and_changes_nothing(api, draft, changes, status, code, details):
    as_submission = submit(api, **{"subtasks": [subtask("a")], **changes})
    response = revise(api, draft["id"], changes)

    error = assert_error(response, status, code)
    assert error == as_submission.json()["error"]
    plan = api.get(f"{PLANS}{draft['id']}/").json()
    assert (plan["revision"], [item["key"] for item in plan["subtasks"]]) == (1, ["a", "b", "c"])
    assert plan_approvals(draft["id"]) == [ApprovalStatus.PENDING]
    assert events_of(draft["id"], "plan.revised", "approval.resolved") == []


def test_fields_that_cannot_be_revised_may_only_be_sent_as_they_are(api, draft):
    error = assert_error(revise(api, draft["id"], {"session_id": "other"}), 400, "validation_error")
    assert list(error["details"]) == ["session_id"]
    assert_error(revise(api, draft["id"], {"requires_approval": False}), 400, "validation_error")
    assert_error(revise(api, draft["id"], ["not", "an", "object"]), 400, "validation_error")
    assert Plan.objects.get(pk=draft["id"]).revision == 1


def test_if_match_must_name_the_current_revision(api, draft):
    stale = assert_error(revise(api, draft["id"], {"goal": "Two"}, if_match='"7"'), 412, "stale_revision")
    assert stale["details"] == {"revision": 1}
    assert_error(revise(api, draft["id"], {"goal": "Two"}, if_match='W/"1"'), 412, "stale_revision")
    assert_error(revise(api, draft["id"], {"goal": "Two"}, if_match="nonsense"), 412, "stale_revision")
    assert Plan.objects.get(pk=draft["id"]).revision == 1

    assert revise(api, draft["id"], {"goal": "Two"}, if_match='"1"').json()["revision"] == 2
    assert revise(api, draft["id"], {"goal": "Three"}, if_match='"1", "2"').json()["revision"] == 3
    assert revise(api, draft["id"], {"goal": "Four"}, if_match="*").json()["revision"] == 4
    assert_error(revise(api, draft["id"], {"goal": "Five"}, if_match='"3"'), 412, "stale_revision")


def test_only_a_draft_is_revised(api, draft):
    api.post(f"{PLANS}{draft['id']}/cancel/")
    error = assert_error(revise(api, draft["id"], {"goal": "Too late"}), 409, "invalid_state")
    assert error["details"] == {"current_status": "cancelled"}
    running = submit(api, requires_approval=False).json()
    error = assert_error(revise(api, running["id"], {"goal": "Too late"}, if_match='"9"'), 409, "invalid_state")
    assert error["details"] == {"current_status": "in_progress"}


def test_only_the_owner_revises(draft, stranger, approver):
    assert_error(revise(client_for(stranger), draft["id"], {"goal": "Mine"}), 404, "not_found")
    assert_error(revise(client_for(approver), draft["id"], {"goal": "Mine"}), 403, "permission_denied")
    assert_error(revise(client_for(None), draft["id"], {"goal": "Mine"}), 401, "not_authenticated")
    assert_error(client_for(stranger).get(f"{PLANS}{draft['id']}/revisions/"), 404, "not_found")
    assert client_for(approver).get(f"{PLANS}{draft['id']}/revisions/").status_code == 200


def test_requesting_changes_keeps_the_plan_a_draft_and_notes_the_reason_on_its_revision(api, draft, approver):
    approval = Approval.objects.get(plan_id=draft["id"])
    reviewer = client_for(approver)

    response = reviewer.post(
        f"{APPROVALS}{approval.pk}/reject/", {"reason": "Drop b", "request_changes": True}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "rejected"
    plan = api.get(f"{PLANS}{draft['id']}/").json()
    assert (plan["status"], plan["revision"]) == ("draft", 1)
    (requested,) = events_of(draft["id"], "plan.changes_requested")
    assert requested == {
        "plan_id": draft["id"],
        "revision": 1,
        "reason": "Drop b",
        "requested_by": "approver",
        "approval_id": str(approval.pk),
    }
    (first,) = api.get(f"{PLANS}{draft['id']}/revisions/").json()
    assert [(r["reason"], r["requested_by"], r["approval_id"]) for r in first["change_requests"]] == [
        ("Drop b", "approver", str(approval.pk))
    ]
    (entry,) = api.get(f"{PLANS}{draft['id']}/history/").json()["results"]
    assert (entry["id"], entry["from_state"], entry["to_state"], entry["actor"]) == (None, "draft", "draft", "approver")
    assert entry["reason"] == "changes requested: Drop b"
    assert entry["metadata"]["event"] == "plan.changes_requested"

    # The owner revises: a new approval for the new revision; the history tells both.
    revise(api, draft["id"], {"subtasks": [subtask("a"), subtask("c", "a", input={"result": 1})]})
    assert plan_approvals(draft["id"]) == [ApprovalStatus.REJECTED, ApprovalStatus.PENDING]
    history = api.get(f"{PLANS}{draft['id']}/history/").json()["results"]
    assert [(h["metadata"]["event"], h["metadata"]["revision"]) for h in history] == [
        ("plan.changes_requested", 1),
        ("plan.revised", 2),
    ]


def test_changes_are_requested_of_plan_approvals_only(api, approver):
    from tests.api.test_approvals import waiting_tool_call

    running = Plan.objects.get(pk=submit(api, requires_approval=False).json()["id"])
    tool_call = waiting_tool_call(running)
    response = client_for(approver).post(
        f"{APPROVALS}{tool_call.pk}/reject/", {"reason": "no", "request_changes": True}, format="json"
    )
    error = assert_error(response, 400, "validation_error")
    assert list(error["details"]) == ["request_changes"]
    assert Approval.objects.get(pk=tool_call.pk).status == ApprovalStatus.PENDING


def test_a_plain_rejection_still_cancels_the_plan(api, draft, approver):
    approval = Approval.objects.get(plan_id=draft["id"])
    client_for(approver).post(f"{APPROVALS}{approval.pk}/reject/", {"reason": "No"}, format="json")
    assert api.get(f"{PLANS}{draft['id']}/").json()["status"] == "cancelled"
    assert events_of(draft["id"], "plan.changes_requested") == []


def test_approving_with_if_match_approves_only_the_revision_read(api, draft):
    revise(api, draft["id"], {"goal": "Revised"})
    stale = api.post(f"{PLANS}{draft['id']}/approve/", HTTP_IF_MATCH='"1"')
    assert assert_error(stale, 412, "stale_revision")["details"] == {"revision": 2}
    assert plan_approvals(draft["id"]) == [ApprovalStatus.CANCELLED, ApprovalStatus.PENDING]
    approved = api.post(f"{PLANS}{draft['id']}/approve/", HTTP_IF_MATCH='"2"')
    assert approved.json()["status"] == "in_progress"
