"""Workers die again and again under a large plan: every subtask still completes once, and the plan completes."""

import time

import pytest

from plans.models import Plan, PlanStatus, Subtask, SubtaskStatus
from tests.faults.launch import record_figures
from tests.faults.ledger import ledger_problems, ledger_runs, ledger_subtask
from tests.support.flows import finished, start, wait_for
from tests.support.invariants import assert_invariants, reconciler_redrove

pytestmark = [pytest.mark.slow, pytest.mark.faults]

LEVELS, WIDTH = 10, 20
POOL_KILLS = 5
MAIN_KILL_BATCH = 3


def chains() -> list[dict]:
    """Twenty chains ten deep: ten dependency batches of twenty subtasks."""
    return [
        ledger_subtask(f"s{level}-{lane}", *([f"s{level - 1}-{lane}"] if level else []), sleep_ms=250)
        for level in range(LEVELS)
        for lane in range(WIDTH)
    ]


def a_running_victim(plan: Plan, *, batch: int, spared: set) -> Subtask:
    """Return a subtask of this batch (or a later one) running in a pool process not yet killed under it."""
    return wait_for(
        lambda: (
            Subtask.objects.filter(plan=plan, status=SubtaskStatus.RUNNING, lost_runs=0, batch_index__gte=batch)
            .exclude(pk__in=spared)
            .order_by("batch_index")
            .first()
        ),
        timeout=30,
        message=f"a running subtask of batch {batch} to kill",
    )


def test_a_200_subtask_plan_completes_through_five_pool_kills_and_a_dead_worker(faults):
    started = time.monotonic()
    plan = start(*chains(), max_parallel=WIDTH)
    victims: set = set()
    orphans_gone_s = None
    # One death per batch from the second on, so that every kind of death meets a batch in full flight.
    for batch in range(1, POOL_KILLS + 2):
        victim = a_running_victim(plan, batch=batch, spared=victims)
        victims.add(victim.pk)
        if batch == MAIN_KILL_BATCH:
            # The worker itself (its main process) dies; it comes back like a supervised service.
            worker = faults.cluster.owner_of(victim)
            orphans_gone_s = faults.kill_main_process(worker)
            faults.restart_worker(worker)
        else:
            faults.kill_pool_process(victim)

    plan = finished(plan, timeout=180)
    duration = time.monotonic() - started
    assert plan.status == PlanStatus.COMPLETED, plan.subtasks.exclude(status=SubtaskStatus.DONE).values("key", "error")
    assert plan.subtasks.filter(status=SubtaskStatus.DONE).count() == LEVELS * WIDTH
    completed = plan.events.filter(type="subtask.completed").values_list("payload__subtask_key", flat=True)
    assert sorted(completed) == sorted(plan.subtasks.values_list("key", flat=True))
    lost = sum(plan.subtasks.values_list("lost_runs", flat=True))
    assert lost >= POOL_KILLS
    assert not ledger_problems(plan)
    assert_invariants(plan)
    runs = ledger_runs(plan)
    record_figures(
        "worker death",
        subtasks=LEVELS * WIDTH,
        batches=LEVELS,
        pool_kills=POOL_KILLS,
        main_kills=1,
        orphans_gone_s=orphans_gone_s,
        duration_s=round(duration, 1),
        attempts=sum(plan.subtasks.values_list("attempts", flat=True)),
        lost_runs=lost,
        agent_runs=sum(len(attempts) for attempts in runs.values()),
        resent=reconciler_redrove([plan.pk]),
    )
