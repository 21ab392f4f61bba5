"""With no reconciler at all, plans run on their primary paths: chord callbacks and the decisions' enqueues."""

import re
import time

import pytest

from plans.models import PlanStatus, SubtaskStatus
from tests.faults.launch import record_figures
from tests.faults.ledger import ledger_problems, ledger_subtask
from tests.support.factories import UserFactory, subtask
from tests.support.flows import finished, pending_approval, start, subtask_in
from tests.support.invariants import assert_invariants, reconciler_redrove

pytestmark = pytest.mark.slow

RECONCILED = re.compile(rb"Task execution\.reconcile\[[^\]]+\] succeeded")
DEPLOY = {"tool_calls": [{"tool": "deploy", "arguments": {"target": "staging"}}], "result": "deployed"}


def test_three_batches_and_an_approval_complete_with_beat_stopped(faults):
    faults.stop_beat()
    control_log = faults.cluster["control"].log
    seen = control_log.stat().st_size
    owner = UserFactory()
    started = time.monotonic()
    plan = start(
        ledger_subtask("build", sleep_ms=200),
        ledger_subtask("lint", sleep_ms=200),
        subtask("deploy", "build", input=DEPLOY),
        ledger_subtask("docs", "lint", sleep_ms=200),
        ledger_subtask("announce", "deploy", "docs"),
        owner=owner,
    )
    approval = pending_approval(plan, "deploy")
    subtask_in(plan, "docs", SubtaskStatus.DONE)

    with faults.api(owner) as api:
        response = api.post(f"/approvals/{approval.pk}/approve/", json={"result": "deployed to staging"})
    assert response.status_code == 200, response.text

    plan = finished(plan, timeout=60)
    assert plan.status == PlanStatus.COMPLETED
    batches = dict(plan.subtasks.values_list("key", "batch_index"))
    assert batches == {"build": 0, "lint": 0, "deploy": 1, "docs": 1, "announce": 2}
    assert plan.subtasks.get(key="deploy").result == {"result": "deployed", "tool_results": ["deployed to staging"]}
    assert reconciler_redrove([plan.pk]) == 0
    assert not RECONCILED.search(control_log.read_bytes()[seen:])
    assert not ledger_problems(plan)
    assert_invariants(plan)
    record_figures(
        "primary paths, beat stopped",
        subtasks=5,
        batches=3,
        duration_s=round(time.monotonic() - started, 1),
        resent=0,
        reconciler_runs=0,
    )
