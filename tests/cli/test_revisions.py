"""`manage.py plans revise`, `plans diff` and `plans reject --request-changes`, in this process."""

import pytest

from approvals.models import Approval, ApprovalStatus
from execution.services import plan_submit
from plans.models import Plan, PlanStatus
from tests.cli.test_command import plan_file, run
from tests.support.factories import UserFactory, plan_data, subtask

pytestmark = pytest.mark.django_db

SUBMITTED = plan_data(subtask("a"), subtask("b", "a"), subtask("c", "a"), session_id="chat")


@pytest.fixture
def draft():
    UserFactory(username="reviewer", is_superuser=True, is_staff=True)
    return plan_submit(owner=UserFactory(username="dev"), data=SUBMITTED)


def test_revise_takes_the_submission_file_edited_and_prints_the_diff(draft, tmp_path):
    edited = {**SUBMITTED, "subtasks": [subtask("a"), subtask("c", "a", description="Do c better"), subtask("d", "c")]}

    code, output = run("revise", str(draft.pk), plan_file(tmp_path, edited), "--user", "dev")

    assert code == 0, output
    assert f"Revised plan {draft.pk}: revision 2" in output
    assert "Revision 1 → 2" in output
    assert "+ d · script · Do d (after c)" in output
    assert "- b · script · Do b (after a)" in output
    assert "Do c better" in output
    assert Plan.objects.get(pk=draft.pk).revision == 2


def test_revise_refuses_a_bad_file_a_fixed_field_and_a_stale_revision(draft, tmp_path):
    cyclic = plan_file(tmp_path, {"subtasks": [subtask("x", "x")]})
    code, output = run("revise", str(draft.pk), cyclic, "--user", "dev")
    assert (code, "Invalid revision (cyclic_dependencies)" in output) == (2, True)

    moved = plan_file(tmp_path, {**SUBMITTED, "session_id": "another"}, name="moved.json")
    code, output = run("revise", str(draft.pk), moved, "--user", "dev")
    assert (code, "session_id" in output) == (2, True)

    goal = plan_file(tmp_path, {"goal": "New goal"}, name="goal.json")
    code, output = run("revise", str(draft.pk), goal, "--if-match", "5", "--user", "dev")
    assert (code, "at revision 1 now" in output) == (1, True)
    code, output = run("revise", str(draft.pk), goal, "--user", "reviewer")
    assert code == 0, output
    code, output = run("revise", str(draft.pk), goal, "--user", "dev")
    assert (code, "unchanged: still revision 2" in output) == (0, True)
    assert Plan.objects.get(pk=draft.pk).revision == 2


def test_only_the_owner_revises_from_the_command_line(draft, tmp_path):
    UserFactory(username="other", is_staff=True)
    code, output = run("revise", str(draft.pk), plan_file(tmp_path, {"goal": "Mine"}), "--user", "other")
    assert code == 2
    assert "No plan" in output  # not even seen


def test_diff_compares_the_revisions_asked_for(draft, tmp_path):
    code, output = run("diff", str(draft.pk), "--user", "dev")
    assert (code, "has not been revised" in output) == (0, True)
    run("revise", str(draft.pk), plan_file(tmp_path, {"max_parallel": 1}), "--user", "dev")
    run("revise", str(draft.pk), plan_file(tmp_path, {"subtasks": [subtask("a")]}), "--user", "dev")

    code, latest = run("diff", str(draft.pk), "--user", "dev")
    assert code == 0
    assert "Revision 2 → 3" in latest
    assert "max_parallel" not in latest
    code, whole = run("diff", str(draft.pk), "1", "3", "--user", "dev")
    assert "Revision 1 → 3" in whole
    assert "max_parallel" in whole
    assert "- c · script" in whole
    code, output = run("diff", str(draft.pk), "4", "--user", "dev")
    assert (code, "no revision 4" in output) == (2, True)


def test_reject_with_request_changes_keeps_the_draft_and_without_cancels_it(draft):
    code, output = run("reject", str(draft.pk), "--reason", "Split b", "--request-changes", "--user", "reviewer")
    assert code == 0, output
    assert "back for changes to revision 1: it stays a draft" in output
    assert Plan.objects.get(pk=draft.pk).status == PlanStatus.DRAFT
    assert Approval.objects.get(plan=draft).status == ApprovalStatus.REJECTED
    assert draft.events.get(type="plan.changes_requested").payload["reason"] == "Split b"

    code, output = run("reject", str(draft.pk), "--reason", "again", "--user", "reviewer")
    assert (code, "has no pending approval" in output) == (1, True)

    other = plan_submit(owner=UserFactory(username="dev"), data=SUBMITTED)
    code, output = run("reject", str(other.pk), "--reason", "no", "--user", "reviewer")
    assert (code, Plan.objects.get(pk=other.pk).status) == (0, PlanStatus.CANCELLED)


def test_watch_asks_for_changes_to_a_plan_and_insists_on_the_reason(draft):
    code, output = run("watch", str(draft.pk), "--user", "reviewer", "--timeout", "1", stdin="c\n\nSplit b\n")
    assert code == 3, output  # the plan stays a draft: the watch times out
    assert "Sent back for changes" in output
    requested = draft.events.get(type="plan.changes_requested").payload
    assert (requested["reason"], requested["requested_by"]) == ("Split b", "reviewer")
    assert requested["revision"] == 1
