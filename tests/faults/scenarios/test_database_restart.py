"""PostgreSQL restarts mid-plan: workers and web reconnect, the plan completes, its history agrees with its statuses."""

import time

import pytest

from plans.models import PlanStatus, SubtaskStatus
from tests.faults.checks import history_problems
from tests.faults.launch import record_figures
from tests.faults.ledger import ledger_problems, ledger_runs, ledger_subtask
from tests.support.factories import UserFactory, subtask
from tests.support.flows import finished, pending_approval, start, wait_for
from tests.support.invariants import assert_invariants, reconciler_redrove

pytestmark = [pytest.mark.slow, pytest.mark.faults]

ASK = {"tool_calls": [{"tool": "migrate", "arguments": {"schema": "v2"}}], "result": "migrated"}
WORK = 7
DOWN_S = 3


def test_a_plan_completes_after_postgres_restarts_under_it(faults):
    owner = UserFactory()
    plan = start(
        subtask("ask", input=ASK),
        *[ledger_subtask(f"work{i}", sleep_ms=2500) for i in range(WORK)],
        ledger_subtask("end", "ask", *[f"work{i}" for i in range(WORK)]),
        max_parallel=WORK + 1,
        owner=owner,
    )
    approval = pending_approval(plan, "ask")
    # Runs well under way: their agents have written their ledger rows and work on.
    wait_for(lambda: plan.subtasks.filter(status=SubtaskStatus.RUNNING).count() >= 3 and len(ledger_runs(plan)) >= 3)
    before = dict(plan.subtasks.values_list("key", "status"))
    assert {SubtaskStatus.RUNNING, SubtaskStatus.QUEUED, SubtaskStatus.WAITING_APPROVAL} <= set(before.values())

    faults.stop_postgres()
    stopped = time.monotonic()
    # Readiness is checked at most once a second (HEALTH_READY_CACHE_S): the next check sees it down.
    down = wait_for(lambda: (answer := faults.health()).status_code == 503 and answer, timeout=10, interval=0.2)
    assert not down.json()["database"]["ok"]
    time.sleep(DOWN_S)
    faults.start_postgres()
    health = faults.healthy_again()
    back_s = time.monotonic() - stopped

    with faults.api(owner) as api:
        response = api.post(f"/approvals/{approval.pk}/approve/", json={"result": "v2 applied"})
    assert response.status_code == 200, response.text

    plan = finished(plan, timeout=90)
    total_s = time.monotonic() - stopped
    assert plan.status == PlanStatus.COMPLETED, plan.subtasks.exclude(status=SubtaskStatus.DONE).values("key", "error")
    assert not history_problems(plan)
    assert not ledger_problems(plan)
    assert_invariants(plan)
    runs = ledger_runs(plan)
    record_figures(
        "database restart",
        statuses_when_stopped=sorted(before.values()),
        down_s=DOWN_S,
        health_answers=health,
        healthy_after_s=round(back_s, 1),
        completed_after_s=round(total_s, 1),
        attempts=sum(plan.subtasks.values_list("attempts", flat=True)),
        lost_runs=sum(plan.subtasks.values_list("lost_runs", flat=True)),
        agent_runs=sum(len(attempts) for attempts in runs.values()),
        resent=reconciler_redrove([plan.pk]),
    )
