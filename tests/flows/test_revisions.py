"""Revising drafts through the API with real workers: sent back, revised, approved, run; and two editors at once."""

import pytest

from approvals.models import Approval, ApprovalKind, ApprovalStatus
from plans.models import Plan, PlanStatus
from tests.support.clients import HttpCaller, LocalCaller, approver, at_once
from tests.support.factories import UserFactory, plan_data, subtask
from tests.support.flows import event_types, finished, wait_for
from tests.support.invariants import assert_invariants

pytestmark = pytest.mark.usefixtures("engine")

APPROVALS = "/api/v1/approvals"
PLANS = "/api/v1/plans"


def pending_plan_approval(plan_id) -> Approval:
    return wait_for(
        lambda: Approval.objects.filter(plan_id=plan_id, kind=ApprovalKind.PLAN, status=ApprovalStatus.PENDING).first(),
        message="a pending plan approval",
    )


def plan_approvals(plan_id) -> list[str]:
    return list(
        Approval.objects.filter(plan_id=plan_id, kind=ApprovalKind.PLAN)
        .order_by("requested_at")
        .values_list("status", flat=True)
    )


def test_changes_requested_then_two_revisions_then_approval_run_the_last_revision_only(web):
    owner = UserFactory()
    agent, reviewer = HttpCaller(web.url, owner), HttpCaller(web.url, approver("reviewer"))
    created = agent.post(
        f"{PLANS}/",
        plan_data(
            subtask("fetch", input={"result": "v1"}),
            subtask("delete_all", "fetch"),
            subtask("report", "fetch", input={"result": "r1"}),
        ),
    )
    plan_id = created.body["id"]

    first = pending_plan_approval(plan_id)
    sent_back = reviewer.post(
        f"{APPROVALS}/{first.pk}/reject/", {"reason": "No delete_all, please", "request_changes": True}
    )
    assert sent_back.status == 200, sent_back.body
    assert agent.get(f"{PLANS}/{plan_id}/").body["status"] == "draft"
    revise_twice(agent, plan_id)
    last = pending_plan_approval(plan_id)
    assert plan_approvals(plan_id) == ["rejected", "cancelled", "pending"]
    assert reviewer.post(f"{APPROVALS}/{last.pk}/approve/").status == 200
    approved = agent.patch(f"{PLANS}/{plan_id}/", {"goal": "Too late"}, headers={"If-Match": '"3"'})
    assert (approved.status, approved.code) == (409, "invalid_state")
    assert approved.body["error"]["details"]["current_status"] in ("in_progress", "completed")

    plan = finished(Plan.objects.get(pk=plan_id))
    assert plan.status == PlanStatus.COMPLETED
    assert_invariants(plan)
    assert dict(plan.subtasks.values_list("key", "result")) == {"fetch": "v3", "summarise": "s3", "report": "r3"}
    assert set(plan.subtasks.values_list("attempts", flat=True)) == {1}
    started = set(plan.events.filter(type="subtask.started").values_list("payload__subtask_key", flat=True))
    assert started == {"fetch", "summarise", "report"}
    assert [(e["type"], e["payload"].get("revision")) for e in review_events(agent, plan_id)] == [
        ("plan.changes_requested", 1),
        ("plan.revised", 2),
        ("plan.revised", 3),
        ("plan.approved", None),
    ]
    revisions = agent.get(f"{PLANS}/{plan_id}/revisions/").body
    assert [r["diff"] and (r["diff"]["added"], r["diff"]["removed"], r["diff"]["changed"]) for r in revisions] == [
        None,
        ([], ["delete_all"], ["fetch", "report"]),
        (["summarise"], [], ["fetch", "report"]),
    ]
    assert revisions[0]["change_requests"][0]["reason"] == "No delete_all, please"

    after = agent.patch(f"{PLANS}/{plan_id}/", {"goal": "Too late"}, headers={"If-Match": '"3"'})
    assert (after.status, after.code, after.body["error"]["details"]) == (
        409,
        "invalid_state",
        {"current_status": "completed"},
    )


def revise_twice(agent, plan_id) -> None:
    """Revise as asked (revision 2), fail once with a bad plan and once with a stale If-Match, then revise again (3)."""
    second = agent.patch(
        f"{PLANS}/{plan_id}/",
        {"subtasks": [subtask("fetch", input={"result": "v2"}), subtask("report", "fetch", input={"result": "r2"})]},
        headers={"If-Match": '"1"'},
    )
    assert (second.status, second.body["revision"]) == (200, 2)
    # A bad revision answers its error and leaves the revision and its approval as they were.
    pending = pending_plan_approval(plan_id)
    bad = agent.patch(f"{PLANS}/{plan_id}/", {"subtasks": [subtask("x", "x")]}, headers={"If-Match": '"2"'})
    assert (bad.status, bad.code, bad.body["error"]["details"]) == (400, "cyclic_dependencies", {"cycle": ["x"]})
    assert (Plan.objects.get(pk=plan_id).revision, pending_plan_approval(plan_id)) == (2, pending)
    stale = agent.patch(f"{PLANS}/{plan_id}/", {"goal": "Mine"}, headers={"If-Match": '"1"'})
    assert (stale.status, stale.code, stale.body["error"]["details"]) == (412, "stale_revision", {"revision": 2})

    third = agent.patch(
        f"{PLANS}/{plan_id}/",
        {
            "subtasks": [
                subtask("fetch", input={"result": "v3"}),
                subtask("summarise", "fetch", input={"result": "s3"}),
                subtask("report", "summarise", input={"result": "r3"}),
            ]
        },
        headers={"If-Match": '"2"'},
    )
    assert (third.status, third.body["revision"]) == (200, 3)


def review_events(caller, plan_id):
    events = caller.get(f"{PLANS}/{plan_id}/events/").body
    return [e for e in events if e["type"] in ("plan.changes_requested", "plan.revised", "plan.approved")]


def test_two_editors_at_once_with_if_match_one_wins_and_the_other_is_told(web):
    owner = UserFactory()
    over_http, here = HttpCaller(web.url, owner), LocalCaller(owner)
    plan_id = over_http.post(f"{PLANS}/", plan_data(subtask("a"), subtask("b"))).body["id"]

    answers = at_once(
        lambda: over_http.patch(f"{PLANS}/{plan_id}/", {"goal": "From http"}, headers={"If-Match": '"1"'}),
        lambda: here.patch(f"{PLANS}/{plan_id}/", {"goal": "From here"}, headers={"If-Match": '"1"'}),
    )

    assert sorted(answer.status for answer in answers) == [200, 412]
    (won,) = [answer for answer in answers if answer.status == 200]
    (lost,) = [answer for answer in answers if answer.status == 412]
    assert (lost.code, lost.body["error"]["details"]) == ("stale_revision", {"revision": 2})
    plan = Plan.objects.get(pk=plan_id)
    assert (plan.revision, plan.goal) == (2, won.body["goal"])
    assert plan_approvals(plan_id) == ["cancelled", "pending"]


def test_two_editors_at_once_without_if_match_are_both_applied_in_turn(web):
    owner = UserFactory()
    over_http, here = HttpCaller(web.url, owner), LocalCaller(owner)
    plan_id = over_http.post(f"{PLANS}/", plan_data(subtask("a"), subtask("b"))).body["id"]

    answers = at_once(
        lambda: over_http.patch(f"{PLANS}/{plan_id}/", {"goal": "From http", "max_parallel": 1}),
        lambda: here.patch(f"{PLANS}/{plan_id}/", {"subtasks": [subtask("a"), subtask("c")]}),
    )

    assert [answer.status for answer in answers] == [200, 200]
    assert sorted(answer.body["revision"] for answer in answers) == [2, 3]
    plan = Plan.objects.get(pk=plan_id)
    # Neither overwrote the other: the plan has both changes, one revision each, in the order they were made.
    assert (plan.revision, plan.goal, plan.max_parallel) == (3, "From http", 1)
    assert sorted(plan.subtasks.values_list("key", flat=True)) == ["a", "c"]
    assert plan_approvals(plan_id) == ["cancelled", "cancelled", "pending"]
    revised = [e.payload for e in plan.events.filter(type="plan.revised").order_by("seq")]
    assert [payload["revision"] for payload in revised] == [2, 3]
    assert event_types(plan).count("approval.requested") == 3
