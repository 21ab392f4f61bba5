"""In a real browser: an approver approves and rejects tool calls in the admin, and the plans finish."""

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission

from approvals.models import ApprovalStatus
from plans.models import PlanStatus, SubtaskStatus
from tests.browser.support import CHROMIUM, CHROMIUM_ARGS
from tests.desk.support import staff
from tests.factories import subtask
from tests.support import finished, pending_approval, start

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

try:
    from playwright import sync_api
except ImportError:  # tests/browser/conftest.py reports it: a skip, or a failure under CI
    sync_api = None  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def _plain_static_names(settings) -> None:
    """Link static files by their plain names.

    The live server serves them straight from the apps' folders (the staticfiles finders),
    where the hashed names of the manifest storage do not exist.
    """
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def flutter_plan(owner):
    """A plan like the seeds' Flutter project: the coder asks to write a file before anything else runs."""
    return start(
        subtask(
            "init_project",
            agent="coder",
            input={
                "tool_calls": [{"tool": "write_file", "arguments": {"path": "pubspec.yaml", "content": "name: app"}}]
            },
        ),
        subtask("build_ui", "init_project", agent="coder", input={"result": "screens done"}),
        subtask("add_api", "init_project", agent="coder", input={"result": "client done"}),
        subtask("run_tests", "build_ui", "add_api", agent="debug", input={"result": "all green"}),
        subtask("summarise", "run_tests", agent="ask", input={"result": "The app is ready."}),
        goal="Create a Flutter app with a login screen",
        owner=owner,
    )


def in_browser(scenario: Callable[[object], None]) -> None:
    """Run a Playwright scenario in its own thread.

    The sync Playwright API keeps an asyncio event loop running in the thread that uses it,
    and Django refuses ORM calls from a thread with a running loop ("You cannot call this
    from an async context"). Driving the browser from a separate thread keeps the test's
    own thread free for the ORM without turning that safety check off (DJANGO_ALLOW_ASYNC_UNSAFE).
    """

    def drive() -> None:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(20_000)
            try:
                scenario(page)
            except BaseException:
                page.screenshot(path=str(ARTIFACTS / "admin-failure.png"), full_page=True)
                raise
            finally:
                browser.close()

    ARTIFACTS.mkdir(exist_ok=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(drive).result(timeout=240)


def reload_until(page, selector: str, text: str, *, timeout: float = 60) -> None:
    """Reload the page until the element shows the text (admin pages do not update by themselves)."""
    deadline = time.monotonic() + timeout
    while text not in (page.locator(selector).first.text_content() or ""):
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector} never showed {text!r}")
        time.sleep(0.5)
        page.reload()


def log_in_and_see_the_queue(page, url: str, approver) -> None:
    """Log in, then find both tool calls in the queue, oldest first, with their arguments readable."""
    expect = sync_api.expect
    page.goto(f"{url}/admin/login/?next=/admin/")
    page.fill("#id_username", approver.username)
    page.fill("#id_password", "pw-for-tests")
    page.click("input[type=submit]")
    expect(page.locator("#monitoring-module")).to_contain_text("Flower")
    page.click("#monitoring-module >> text=Pending approvals")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("write_file")
    expect(rows.nth(0)).to_contain_text("pubspec.yaml")
    expect(rows.nth(1)).to_contain_text("rm -rf /")
    page.screenshot(path=str(ARTIFACTS / "admin-approvals-queue.png"), full_page=True)


def approve_the_write_and_see_the_plan_complete(page, url: str, flutter) -> None:
    """Open the coder's write_file from its plan, approve it with a result, and watch the plan finish."""
    expect = sync_api.expect
    page.goto(f"{url}/admin/plans/plan/{flutter.pk}/change/")
    expect(page.locator(".fieldBox.field-execution_badge")).to_contain_text("waiting approval")
    expect(page.locator(".plan-dag .node[data-key=init_project]")).to_have_attribute("data-status", "waiting_approval")
    page.locator(".plan-dag").screenshot(path=str(ARTIFACTS / "admin-plan-dag-waiting.png"))
    page.click(".field-approvals_waiting a")
    page.click("#result_list tbody tr >> nth=0 >> th a")
    page.fill("#id_result", '{"written": true, "bytes": 9}')
    page.fill("#id_reason", "looks fine")
    page.click("#decision-form input[name=_approve]")
    expect(page.locator(".messagelist .success")).to_contain_text("Approved: tool call 'write_file'")

    page.goto(f"{url}/admin/plans/plan/{flutter.pk}/change/")
    reload_until(page, ".fieldBox.field-status_badge", "completed")
    expect(page.locator(".plan-dag .node[data-status=done]")).to_have_count(5)
    page.locator(".plan-dag").screenshot(path=str(ARTIFACTS / "admin-plan-dag.png"))
    page.screenshot(path=str(ARTIFACTS / "admin-plan-page.png"), full_page=True)

    # Each subtask links to the Celery task result of its run.
    page.click("#subtasks-group tr:has-text('summarise') >> text=task result")
    reload_until(page, "#result_list", "SUCCESS")
    expect(page.locator("#result_list")).to_contain_text("execution.run_subtask")


def reject_the_shell_and_see_the_subtask_fail(page, url: str, risky, shell) -> None:
    """Reject the shell call with a reason; the subtask fails with it; a second decision is a message."""
    expect = sync_api.expect
    page.goto(f"{url}/admin/approvals/approval/{shell.pk}/change/")
    page.fill("#id_reason", "Never delete the root directory")
    page.click("#decision-form input[name=_reject]")
    expect(page.locator(".messagelist .success")).to_contain_text("Rejected: tool call 'shell'")
    page.goto(f"{url}/admin/plans/plan/{risky.pk}/change/")
    reload_until(page, ".fieldBox.field-status_badge", "failed")
    expect(page.locator(".plan-dag .node[data-key=clean_build]")).to_have_attribute("data-status", "failed")
    expect(page.locator("#subtasks-group")).to_contain_text("Never delete the root directory")

    page.goto(f"{url}/admin/approvals/approval/?status__exact=approved")
    page.check(".action-select >> nth=0")
    page.select_option("select[name=action]", "reject_selected")
    page.click("button[name=index]")
    expect(page.locator(".messagelist .error")).to_contain_text("is already approved")


def test_an_approver_approves_one_tool_call_and_rejects_another_and_the_plans_finish(engine, live_server):
    approver = staff("approver", permission=True)
    approver.user_permissions.add(Permission.objects.get(codename="view_taskresult"))
    owner = staff("owner")
    flutter = flutter_plan(owner)
    risky = start(
        subtask(
            "clean_build", agent="coder", input={"tool_calls": [{"tool": "shell", "arguments": {"cmd": "rm -rf /"}}]}
        ),
        goal="Clean the build directory",
        owner=owner,
    )
    write, shell = pending_approval(flutter, "init_project"), pending_approval(risky, "clean_build")

    def scenario(page) -> None:
        log_in_and_see_the_queue(page, live_server.url, approver)
        approve_the_write_and_see_the_plan_complete(page, live_server.url, flutter)
        reject_the_shell_and_see_the_subtask_fail(page, live_server.url, risky, shell)

    in_browser(scenario)

    flutter, risky = finished(flutter), finished(risky)
    assert flutter.status == PlanStatus.COMPLETED
    init = flutter.subtasks.get(key="init_project")
    assert init.result == {"result": "init_project: done", "tool_results": [{"written": True, "bytes": 9}]}
    write.refresh_from_db()
    assert (write.status, write.decided_by, write.reason) == (ApprovalStatus.APPROVED, approver, "looks fine")

    assert risky.status == PlanStatus.FAILED
    clean = risky.subtasks.get()
    assert clean.status == SubtaskStatus.FAILED
    assert "Never delete the root directory" in clean.error
    shell.refresh_from_db()
    assert shell.status == ApprovalStatus.REJECTED
