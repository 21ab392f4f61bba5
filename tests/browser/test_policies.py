"""In a real browser: two deployers of a rule asking for two votes decide a tool call from the admin.

The web process and the workers read tests/support/policy.json (tests/conftest.py): its rule
"two deployers" asks two members of the group policy-deployers, not the plan's owner.
"""

import pytest
from django.contrib.auth.models import Group

from approvals.models import ApprovalStatus
from plans.models import PlanStatus
from tests.browser.test_admin import ARTIFACTS, in_browser, log_in, sync_api
from tests.conftest import POLICY_FILE
from tests.desk.support import staff
from tests.support.factories import subtask
from tests.support.flows import finished, pending_approval, start

DEPLOY = {"tool_calls": [{"tool": "policy_deploy", "arguments": {"env": "prod"}}]}


@pytest.fixture(autouse=True)
def _policy(settings) -> None:
    settings.APPROVALS_POLICY_FILE = str(POLICY_FILE)


def test_two_deployers_vote_in_the_admin_and_the_second_vote_decides(engine, web):
    group, _ = Group.objects.get_or_create(name="policy-deployers")
    first, second = staff("deployer-one"), staff("deployer-two")
    group.user_set.add(first, second)
    owner = staff("deploy-owner")
    plan = start(subtask("deploy", input=DEPLOY), goal="Deploy to production", owner=owner)
    approval = pending_approval(plan, "deploy")
    page_of_it = f"/admin/approvals/approval/{approval.pk}/change/"

    def vote(page, user) -> None:
        page.context.clear_cookies()
        log_in(page, web, user.username)
        page.goto(f"{web.url}{page_of_it}")
        page.fill("#id_reason", f"{user.username} checked the release notes")
        page.click("#decision-form input[name=_approve]")

    def scenario(page) -> None:
        expect = sync_api.expect
        vote(page, first)
        expect(page.locator(".messagelist")).to_contain_text("waits for more approvals")
        row = page.locator("#result_list tbody tr", has_text="policy_deploy")
        expect(row).to_contain_text("1 of 2")
        page.goto(f"{web.url}{page_of_it}")
        expect(page.locator("table.votes")).to_contain_text("deployer-one")
        expect(page.locator("table.votes")).to_contain_text("admin")
        expect(page.locator(".fieldBox.field-policy_rule")).to_contain_text("two deployers (ask)")
        page.screenshot(path=str(ARTIFACTS / "admin-approval-votes.png"), full_page=True)

        # The same person may not vote twice; the owner may not vote at all (separate requester).
        page.fill("#id_reason", "again")
        page.click("#decision-form input[name=_approve]")
        expect(page.locator(".messagelist .error")).to_contain_text("Not decided")

        vote(page, second)
        expect(page.locator(".messagelist .success")).to_contain_text("Approved: tool call 'policy_deploy'")

        page.goto(f"{web.url}/admin/")
        page.click("text=Approval policy")
        expect(page.locator("#policy-rules")).to_contain_text("two deployers")
        expect(page.locator("#policy-rules")).to_contain_text("group:policy-deployers")

    in_browser(scenario)

    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    approval.refresh_from_db()
    assert (approval.status, approval.channel, approval.decided_by) == (ApprovalStatus.APPROVED, "admin", second)
    assert sorted(approval.votes.values_list("user__username", "channel")) == [
        ("deployer-one", "admin"),
        ("deployer-two", "admin"),
    ]
