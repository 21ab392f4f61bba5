"""In a real browser: a reviewer reads what a revision changed beside the plan approval, and sends the plan back."""

from approvals.models import Approval, ApprovalKind, ApprovalStatus
from execution.services import plan_revise, plan_submit
from plans.models import Plan, PlanStatus
from tests.browser.test_admin import ARTIFACTS, in_browser, log_in, sync_api
from tests.desk.support import staff
from tests.support.factories import plan_data, subtask

ADDED_BACKGROUND = "rgb(220, 252, 231)"  # #dcfce7
REMOVED_BACKGROUND = "rgb(254, 226, 226)"  # #fee2e2


def revised_release(owner) -> Plan:
    """A draft whose revision 2 adds a review step, drops the tweet and rewrites the publishing step."""
    plan = plan_submit(
        owner=owner,
        data=plan_data(
            subtask("draft_notes", agent="coder"),
            subtask("tweet", "draft_notes"),
            subtask("publish", "draft_notes", description="Publish <b>now</b>"),
            goal="Publish the release notes",
        ),
    )
    plan_revise(
        plan_id=plan.pk,
        author=owner,
        changes={
            "subtasks": [
                subtask("draft_notes", agent="coder"),
                subtask("review_notes", "draft_notes", agent="ask"),
                subtask("publish", "review_notes", description="Publish the reviewed notes"),
            ]
        },
    )
    return Plan.objects.get(pk=plan.pk)


def test_a_reviewer_reads_the_revisions_diff_and_requests_changes(web, transactional_db):
    reviewer = staff("reviewer", permission=True)
    plan = revised_release(staff("agent"))
    approval = Approval.objects.get(plan=plan, kind=ApprovalKind.PLAN, status=ApprovalStatus.PENDING)

    def scenario(page) -> None:
        expect = sync_api.expect
        log_in(page, web, reviewer.username)
        page.goto(f"{web.url}/admin/approvals/approval/{approval.pk}/change/")

        changes = page.locator(".field-revision_changes")
        expect(changes).to_contain_text("Revision 2, from revision 1:")
        added, removed = changes.locator(".diff-added[data-key=review_notes]"), changes.locator(".diff-removed")
        expect(added).to_contain_text("review_notes · ask")
        expect(removed).to_have_attribute("data-key", "tweet")
        assert added.evaluate("e => getComputedStyle(e).backgroundColor") == ADDED_BACKGROUND
        assert removed.evaluate("e => getComputedStyle(e).backgroundColor") == REMOVED_BACKGROUND
        assert removed.evaluate("e => getComputedStyle(e).textDecorationLine") == "line-through"
        side_by_side = changes.locator("table[data-subject='subtask publish'] tr[data-field=description]")
        expect(side_by_side.locator(".diff-before")).to_have_text("Publish <b>now</b>")  # escaped, shown as typed
        expect(side_by_side.locator(".diff-after")).to_have_text("Publish the reviewed notes")
        picture = page.locator(".field-revision_picture .plan-dag")
        expect(picture.locator(".node[data-key=review_notes]")).to_have_attribute("data-change", "added")
        expect(picture.locator(".node[data-key=publish]")).to_have_attribute("data-change", "changed")
        expect(picture.locator(".node[data-key=draft_notes]")).not_to_have_attribute("data-change", "added")
        page.screenshot(path=str(ARTIFACTS / "admin-approval-revision-diff.png"), full_page=True)

        # Request changes beside Approve and Reject: it asks for the reason first.
        buttons = page.locator("#decision-form .buttons input[type=submit]")
        expect(buttons).to_have_count(3)
        expect(buttons.nth(2)).to_have_value("Request changes")
        page.click("#decision-form input[name=_request_changes]")
        expect(page.locator("#decision-form .field-reason .errorlist")).to_contain_text("Say what should change")
        page.fill("#id_reason", "Publish only after a person read the notes")
        page.click("#decision-form input[name=_request_changes]")
        expect(page.locator(".messagelist .success")).to_contain_text("Sent back for changes: plan")
        page.screenshot(path=str(ARTIFACTS / "admin-approval-changes-requested.png"), full_page=True)

        page.goto(f"{web.url}/admin/plans/plan/{plan.pk}/change/")
        expect(page.locator(".revision[data-revision='2'] .change-request")).to_contain_text(
            "Publish only after a person read the notes"
        )
        page.locator("fieldset:has(.revision)").screenshot(path=str(ARTIFACTS / "admin-plan-revisions.png"))

    in_browser(scenario)

    plan.refresh_from_db()
    approval.refresh_from_db()
    assert (plan.status, plan.revision) == (PlanStatus.DRAFT, 2)
    assert (approval.status, approval.decided_by) == (ApprovalStatus.REJECTED, reviewer)
    requested = plan.events.get(type="plan.changes_requested").payload
    assert (requested["revision"], requested["requested_by"]) == (2, "reviewer")
