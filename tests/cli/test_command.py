"""`manage.py plans`: submit, watch, approve and inspect plans from a terminal."""

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from approvals.models import Approval, ApprovalStatus
from execution.services import plan_submit
from plans.models import Plan, PlanStatus
from tests.support.factories import UserFactory, plan_data, subtask

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    """Run the command; return its exit code and everything it printed (the error message included)."""
    out = io.StringIO()
    try:
        call_command("plans", *args, stdout=out, stdin=io.StringIO(stdin) if stdin is not None else None)
    except CommandError as error:
        return error.returncode, out.getvalue() + str(error)
    return 0, out.getvalue()


def plan_file(tmp_path: Path, data: object, name: str = "plan.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def rows(output: str) -> dict[str, list[str]]:
    """Return the final table's rows by subtask key: agent, status, attempts."""
    found = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃|").split("│")]
        if len(cells) == 4 and cells[3].isdigit():
            found[cells[0]] = cells[1:]
    return found


@pytest.mark.usefixtures("engine")
class TestWithWorkers:
    def test_submit_and_watch_without_input_runs_the_plan_and_prints_its_subtasks(self):
        user = UserFactory(username="dev")
        code, output = run("submit", str(EXAMPLES / "hello.json"), "--watch", "--no-input", "--user", "dev")
        assert code == 0, output
        assert rows(output) == {
            "greet": ["script", "done", "1"],
            "name": ["ask", "done", "1"],
            "combine": ["coder", "done", "1"],
        }
        plan = Plan.objects.get(owner=user)
        assert plan.status == PlanStatus.COMPLETED
        assert str(plan.pk) in output

    def test_approve_on_submit_starts_a_plan_that_needs_approval(self, tmp_path):
        UserFactory(username="dev")
        path = plan_file(tmp_path, plan_data(subtask("a"), subtask("b", "a"), goal="Needs approval"))
        code, output = run("submit", path, "--approve", "--watch", "--no-input", "--user", "dev")
        assert code == 0, output
        assert Approval.objects.get(kind="plan").status == ApprovalStatus.APPROVED
        assert rows(output) == {"a": ["script", "done", "1"], "b": ["script", "done", "1"]}

    def test_watch_exits_non_zero_when_the_plan_fails(self, tmp_path):
        UserFactory(username="dev")
        data = plan_data(subtask("flaky", max_retries=0, input={"fail_times": 5}), requires_approval=False)
        code, output = run("submit", plan_file(tmp_path, data), "--watch", "--no-input", "--user", "dev")
        assert code == 1
        assert rows(output) == {"flaky": ["script", "failed", "1"]}
        assert "failed" in output.splitlines()[-1]

    def test_watch_asks_about_a_pending_tool_call_and_sends_the_decision(self):
        user = UserFactory(username="dev")
        plan = plan_submit(owner=user, data=json.loads((EXAMPLES / "one_approval.json").read_text()))
        # Approve, a reason, keep the arguments, and the tool's result.
        code, output = run("watch", str(plan.pk), "--user", "dev", stdin='a\nlooks right\n\n"written"\n')
        assert code == 0, output
        approval = Approval.objects.get(plan=plan, kind="tool_call")
        assert (approval.status, approval.reason, approval.result) == (
            ApprovalStatus.APPROVED,
            "looks right",
            "written",
        )
        assert plan.subtasks.get(key="patch").result == {"result": "patched", "tool_results": ["written"]}
        assert "write_file" in output


@pytest.mark.django_db
class TestWithoutWorkers:
    @pytest.fixture(autouse=True)
    def _user(self):
        UserFactory(username="dev")

    def test_a_file_that_is_not_json_is_refused_with_code_2(self, tmp_path):
        code, output = run("submit", plan_file(tmp_path, "{goal: nope"), "--user", "dev")
        assert code == 2
        assert "is not valid JSON" in output
        assert "line 1" in output
        assert not Plan.objects.exists()

    def test_a_missing_file_is_refused_with_code_2(self, tmp_path):
        code, output = run("submit", str(tmp_path / "missing.json"), "--user", "dev")
        assert (code, "Cannot read") == (2, output[: len("Cannot read")])

    def test_an_invalid_plan_is_refused_with_code_2_and_its_error_code(self, tmp_path):
        data = plan_data(subtask("a", "b"), subtask("b", "a"))
        code, output = run("submit", plan_file(tmp_path, data), "--user", "dev")
        assert code == 2
        assert "cyclic_dependencies" in output
        assert "Traceback" not in output

    def test_an_unknown_agent_is_refused_with_its_error_code(self, tmp_path):
        code, output = run("submit", plan_file(tmp_path, plan_data(subtask("a", agent="nobody"))), "--user", "dev")
        assert code == 2
        assert "unknown_agent" in output

    def test_submit_leaves_a_plan_needing_approval_in_draft_and_approve_approves_it(self, tmp_path):
        code, output = run("submit", plan_file(tmp_path, plan_data(subtask("a"))), "--user", "dev")
        assert code == 0, output
        plan = Plan.objects.get()
        assert plan.status == PlanStatus.DRAFT
        assert f"plans approve {plan.pk}" in output

        code, output = run("approve", str(plan.pk), "--user", "dev")
        assert code == 0, output
        assert Plan.objects.get().status == PlanStatus.IN_PROGRESS

        code, output = run("approve", str(plan.pk), "--user", "dev")
        assert code == 1
        assert "Only a draft plan can be approved" in output

    def test_status_shows_progress_pending_approvals_and_subtasks(self, tmp_path):
        run("submit", plan_file(tmp_path, plan_data(subtask("first"), subtask("second", "first"))), "--user", "dev")
        plan = Plan.objects.get()
        code, output = run("status", str(plan.pk), "--user", "dev")
        assert code == 0, output
        assert "0/2 (0%)" in output
        assert "Pending approvals" in output
        assert "the plan" in output
        assert rows(output) == {"first": ["script", "pending", "0"], "second": ["script", "pending", "0"]}

    def test_watch_gives_up_after_its_timeout_with_code_3(self, tmp_path):
        run("submit", plan_file(tmp_path, plan_data(subtask("a"))), "--user", "dev")
        code, output = run("watch", str(Plan.objects.get().pk), "--no-input", "--timeout", "0.5", "--user", "dev")
        assert code == 3
        assert "Timed out" in output
        assert rows(output) == {"a": ["script", "pending", "0"]}

    def test_unknown_plans_and_users_are_refused_with_code_2(self):
        assert run("status", "not-a-uuid", "--user", "dev")[0] == 2
        code, output = run("status", "00000000-0000-0000-0000-000000000000", "--user", "dev")
        assert (code, "No plan" in output) == (2, True)
        code, output = run("status", "00000000-0000-0000-0000-000000000000", "--user", "nobody")
        assert (code, "No active user 'nobody'" in output) == (2, True)

    def test_without_user_it_acts_as_the_first_superuser_or_asks_for_one(self, tmp_path):
        code, output = run("submit", plan_file(tmp_path, plan_data(subtask("a"))))
        assert code == 2
        assert "--user" in output
        admin = UserFactory(username="admin", is_superuser=True, is_staff=True)
        assert run("submit", plan_file(tmp_path, plan_data(subtask("a"))))[0] == 0
        assert Plan.objects.get().owner == admin
