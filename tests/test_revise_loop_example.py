"""examples/revise_loop.py as its own process against the web server and workers: sent back, revised, run."""

import os
import subprocess
import sys

import pytest

from approvals.models import Approval, ApprovalKind, ApprovalStatus
from plans.models import Plan
from scripts.processes import ROOT
from tests.support.clients import HttpCaller, approver, token_of
from tests.support.factories import UserFactory
from tests.support.flows import wait_for

pytestmark = pytest.mark.usefixtures("engine")

EXAMPLES = ROOT / "examples"


def pending_plan_approval(owner, revision: int) -> Approval:
    def found():
        plan = Plan.objects.filter(owner=owner, revision=revision).first()
        if plan is None:
            return None
        return Approval.objects.filter(plan=plan, kind=ApprovalKind.PLAN, status=ApprovalStatus.PENDING).first()

    return wait_for(found, message=f"the approval of revision {revision}")


def loop(web, owner, *files: str) -> subprocess.Popen:
    env = {**os.environ, "PLANS_TOKEN": token_of(owner)}
    command = [sys.executable, str(EXAMPLES / "revise_loop.py"), web.url, *(str(EXAMPLES / name) for name in files)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_the_example_revises_its_plan_when_changes_are_asked_for_and_sees_it_run(web):
    owner = UserFactory(username="agent")
    reviewer = HttpCaller(web.url, approver("reviewer"))
    process = loop(web, owner, "release_notes.json", "release_notes_revised.json")
    try:
        first = pending_plan_approval(owner, 1)
        reason = "Add a review step before publishing"
        sent_back = reviewer.post(f"/api/v1/approvals/{first.pk}/reject/", {"reason": reason, "request_changes": True})
        assert sent_back.status == 200, sent_back.body
        second = pending_plan_approval(owner, 2)
        assert reviewer.post(f"/api/v1/approvals/{second.pk}/approve/").status == 200
        output, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, output
    assert f"changes requested on revision 1: {reason}" in output
    assert "revised: revision 2, waiting for approval again" in output
    assert "approved by reviewer" in output
    assert "completed at revision 2" in output
    plan = Plan.objects.get(owner=owner)
    assert list(plan.subtasks.order_by("batch_index").values_list("key", flat=True)) == [
        "draft_notes",
        "review_notes",
        "publish",
    ]


def test_the_example_cancels_its_plan_when_it_has_no_revision_to_offer(web):
    owner = UserFactory(username="agent")
    reviewer = HttpCaller(web.url, approver("reviewer"))
    process = loop(web, owner, "release_notes.json")
    try:
        first = pending_plan_approval(owner, 1)
        reviewer.post(f"/api/v1/approvals/{first.pk}/reject/", {"reason": "Not now", "request_changes": True})
        output, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 1, output
    assert "nothing more to offer: cancelled" in output
    assert Plan.objects.get(owner=owner).status == "cancelled"
