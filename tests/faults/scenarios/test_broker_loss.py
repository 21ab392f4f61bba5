"""The broker loses every message, restarted or flushed, mid-plan and while a plan waits for a decision."""

import time

import pytest

from plans.models import PlanStatus, SubtaskStatus
from tests.faults.launch import record_figures
from tests.faults.ledger import ledger_problems, ledger_runs, ledger_subtask
from tests.support.factories import UserFactory, subtask
from tests.support.flows import finished, pending_approval, start, wait_for
from tests.support.invariants import assert_invariants, reconciler_redrove

pytestmark = [pytest.mark.slow, pytest.mark.faults]

ASK = {"tool_calls": [{"tool": "send_email", "arguments": {"to": "ops@example.com"}}], "result": "sent"}
WORKERS_SLOTS = 4


@pytest.mark.parametrize("loss", ["restart", "flush"])
def test_plans_complete_once_after_the_broker_loses_every_message(faults, loss):
    owner = UserFactory()
    waiting = start(subtask("ask", input=ASK), ledger_subtask("after", "ask"), owner=owner)
    approval = pending_approval(waiting, "ask")
    # The web has used its broker connections before they are lost.
    before = faults.health()
    assert before.status_code == 200, before.text
    # Twice as many subtasks as pool processes: some run, the others wait in the broker's queue.
    busy = start(
        *[ledger_subtask(f"work{i}", sleep_ms=1500) for i in range(2 * WORKERS_SLOTS)],
        ledger_subtask("end", *[f"work{i}" for i in range(2 * WORKERS_SLOTS)]),
        max_parallel=2 * WORKERS_SLOTS,
        owner=owner,
    )
    wait_for(lambda: busy.subtasks.filter(status=SubtaskStatus.RUNNING).count() >= WORKERS_SLOTS - 1)
    running = busy.subtasks.filter(status=SubtaskStatus.RUNNING).count()
    in_broker = len(faults.messages_in("subtasks"))
    assert in_broker >= 1

    lost_at = time.monotonic()
    if loss == "restart":
        faults.restart_redis()
    else:
        faults.flush_redis()
    # Monitoring asks first: the web's broker connections from before the loss must not make it fail.
    health = faults.healthy_again()
    assert set(health) <= {200, 503}, health
    with faults.api(owner) as api:
        response = api.post(f"/approvals/{approval.pk}/approve/", json={"result": "sent at 9:00"})
    assert response.status_code == 200, response.text

    busy, waiting = finished(busy, timeout=90), finished(waiting, timeout=60)
    recovered_s = time.monotonic() - lost_at
    assert (busy.status, waiting.status) == (PlanStatus.COMPLETED, PlanStatus.COMPLETED)
    assert waiting.subtasks.get(key="ask").result == {"result": "sent", "tool_results": ["sent at 9:00"]}
    for plan in (busy, waiting):
        assert not ledger_problems(plan)
    runs = ledger_runs(busy)
    assert all(attempts == [1] for attempts in runs.values()), runs
    assert_invariants([busy, waiting])
    record_figures(
        f"broker {loss}",
        running_when_lost=running,
        in_broker_when_lost=in_broker,
        recovered_s=round(recovered_s, 1),
        resent=reconciler_redrove([busy.pk, waiting.pk]),
        agent_runs=sum(len(attempts) for attempts in runs.values()),
        subtasks=busy.subtasks.count(),
        health_answers=health,
    )
