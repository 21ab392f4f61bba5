"""In a real browser, through uvicorn as the docs start it: a styled admin where an approver decides tool calls.

The web process runs the production settings (debug off, WhiteNoise, nothing collected), so
what the browser sees is what a new user sees after `migrate` and `uvicorn config.asgi:application`.
"""

import json
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.contrib.auth.models import Permission

from approvals.models import ApprovalStatus
from execution.services import plan_submit
from plans.models import PlanStatus, SubtaskStatus
from scripts.processes import ROOT
from tests.browser.support import CHROMIUM, CHROMIUM_ARGS
from tests.desk.support import staff
from tests.support.factories import subtask
from tests.support.flows import finished, pending_approval, start

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
# A Celery task id, as the subtasks table shows it.
TASK_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

try:
    from playwright import sync_api
except ImportError:  # tests/browser/conftest.py reports it: a skip, or a failure under CI
    sync_api = None  # type: ignore[assignment]

ADMIN_HEADER_COLOUR = "rgb(65, 118, 144)"  # Django admin's --header-bg, #417690


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


def in_browser(scenario: Callable[[object], None], *, width: int = 1440) -> None:
    """Run a Playwright scenario in its own thread.

    The sync Playwright API keeps an asyncio event loop running in the thread that uses it,
    and Django refuses ORM calls from a thread with a running loop ("You cannot call this
    from an async context"). Driving the browser from a separate thread keeps the test's
    own thread free for the ORM without turning that safety check off (DJANGO_ALLOW_ASYNC_UNSAFE).
    """

    def drive() -> None:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": width, "height": 1000})
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


def log_in(page, web, username: str) -> None:
    """Log in through the admin's login page, checking both it and the index arrive styled."""
    stylesheets: list[tuple[str, int]] = []

    def record(response) -> None:
        if response.request.resource_type == "stylesheet":
            stylesheets.append((response.url, response.status))

    page.on("response", record)
    page.goto(f"{web.url}/admin/login/?next=/admin/")
    assert_styled(page)
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-for-tests")
    page.click("input[type=submit]")
    sync_api.expect(page.locator("#site-name")).to_be_visible()
    assert_styled(page)
    page.remove_listener("response", record)
    assert any(url.endswith(".css") and "admin/css/base" in url for url, _ in stylesheets), stylesheets
    assert all(status == 200 for _, status in stylesheets), stylesheets


def assert_styled(page) -> None:
    """The admin's header has its colour only when base.css loaded."""
    colour = page.locator("#header").evaluate("header => getComputedStyle(header).backgroundColor")
    assert colour == ADMIN_HEADER_COLOUR, f"{page.url}: header is {colour}"


def reload_until(page, selector: str, text: str, *, timeout: float = 60) -> None:
    """Reload the page until the element shows the text (admin pages do not update by themselves)."""
    deadline = time.monotonic() + timeout
    while text not in (page.locator(selector).first.text_content() or ""):
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector} never showed {text!r}")
        time.sleep(0.5)
        page.reload()


def approve_the_write(page, web, approver, flutter) -> None:
    """Sign in as the approver, read the queue, approve the coder's write_file with a result; the plan completes."""
    expect = sync_api.expect
    log_in(page, web, approver.username)
    expect(page.locator("#monitoring-module")).to_contain_text("Flower")

    # The queue: both tool calls, oldest first, with their arguments readable.
    page.click("#monitoring-module >> text=Pending approvals")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(2)
    assert_styled(page)
    expect(rows.nth(0)).to_contain_text("write_file")
    expect(rows.nth(0)).to_contain_text("pubspec.yaml")
    expect(rows.nth(1)).to_contain_text("rm -rf /")
    page.screenshot(path=str(ARTIFACTS / "admin-approvals-queue.png"), full_page=True)

    # The Flutter plan waits for the coder's write_file: open it from the plan, approve with a result.
    page.goto(f"{web.url}/admin/plans/plan/{flutter.pk}/change/")
    expect(page.locator(".fieldBox.field-execution_badge")).to_contain_text("waiting approval")
    assert_styled(page)
    expect(page.locator(".plan-dag .node[data-key=init_project]")).to_have_attribute("data-status", "waiting_approval")
    page.locator(".plan-dag").screenshot(path=str(ARTIFACTS / "admin-plan-dag-waiting.png"))
    page.click(".field-approvals_waiting a")
    page.click("#result_list tbody tr >> nth=0 >> th a")
    page.fill("#id_result", '{"written": true, "bytes": 9}')
    page.fill("#id_reason", "looks fine")
    page.click("#decision-form input[name=_approve]")
    expect(page.locator(".messagelist .success")).to_contain_text("Approved: tool call 'write_file'")

    page.goto(f"{web.url}/admin/plans/plan/{flutter.pk}/change/")
    reload_until(page, ".fieldBox.field-status_badge", "completed")
    expect(page.locator(".plan-dag .node[data-status=done]")).to_have_count(5)
    page.locator(".plan-dag").screenshot(path=str(ARTIFACTS / "admin-plan-dag.png"))
    page.screenshot(path=str(ARTIFACTS / "admin-plan-page.png"), full_page=True)

    # Each subtask shows the Celery task of its run (its id: results are in Redis by default).
    expect(page.locator("#subtasks-group tr:has-text('summarise')")).to_contain_text(re.compile(TASK_ID))


def reject_the_shell(page, web, risky, shell) -> None:
    """Reject the shell call with a reason (the plan fails with it); a second decision is refused."""
    expect = sync_api.expect
    page.goto(f"{web.url}/admin/approvals/approval/{shell.pk}/change/")
    page.fill("#id_reason", "Never delete the root directory")
    page.click("#decision-form input[name=_reject]")
    expect(page.locator(".messagelist .success")).to_contain_text("Rejected: tool call 'shell'")
    page.goto(f"{web.url}/admin/plans/plan/{risky.pk}/change/")
    reload_until(page, ".fieldBox.field-status_badge", "failed")
    expect(page.locator(".plan-dag .node[data-key=clean_build]")).to_have_attribute("data-status", "failed")
    expect(page.locator("#subtasks-group")).to_contain_text("Never delete the root directory")

    # A second decision is refused with a message, not an error page.
    page.goto(f"{web.url}/admin/approvals/approval/?status__exact=approved")
    page.check(".action-select >> nth=0")
    page.select_option("select[name=action]", "reject_selected")
    page.click("button[name=index]")
    expect(page.locator(".messagelist .error")).to_contain_text("is already approved")


def test_an_approver_approves_one_tool_call_and_rejects_another_and_the_plans_finish(engine, web):
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
        approve_the_write(page, web, approver, flutter)
        reject_the_shell(page, web, risky, shell)

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


def test_a_wide_plan_picture_scrolls_inside_its_panel_to_the_last_batch(web, transactional_db):
    root = staff("root", superuser=True)
    seeds = json.loads((ROOT / "examples" / "flutter_app.json").read_text())
    plan = plan_submit(owner=root, data=seeds)
    last = plan.subtasks.order_by("-batch_index", "-position").first()
    assert last is not None
    assert last.batch_index == 5  # six batches, too wide for the panel at 1400 pixels

    def scenario(page) -> None:
        log_in(page, web, root.username)
        page.goto(f"{web.url}/admin/plans/plan/{plan.pk}/change/")
        frame = page.locator(".plan-dag-frame")
        size = frame.evaluate(
            """frame => ({
                client: frame.clientWidth,
                scroll: frame.scrollWidth,
                overflow: getComputedStyle(frame).overflowX,
                picture: frame.querySelector("svg").getBoundingClientRect().width,
            })"""
        )
        fits = size["picture"] <= size["client"]
        scrolls = size["scroll"] > size["client"] and size["overflow"] in ("auto", "scroll")
        assert fits or scrolls, size
        # The frame itself stays inside its fieldset, which would clip it.
        fieldset = page.locator("fieldset:has(.plan-dag-frame)").bounding_box()
        panel = frame.bounding_box()
        assert panel["x"] + panel["width"] <= fieldset["x"] + fieldset["width"] + 1, (panel, fieldset)

        node = page.locator(f".plan-dag .node[data-key={last.key}]")
        node.scroll_into_view_if_needed()
        box = node.bounding_box()
        assert panel["x"] <= box["x"], (box, panel)
        assert box["x"] + box["width"] <= panel["x"] + panel["width"], (box, panel)
        page.locator(".plan-dag").screenshot(path=str(ARTIFACTS / "admin-plan-dag-wide.png"))

    in_browser(scenario, width=1400)
