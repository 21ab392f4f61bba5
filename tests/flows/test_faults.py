"""Delivery truths: killed and frozen workers, a flushed broker, a poison subtask."""

import os
import signal
import time

import pytest
import redis
from django.conf import settings

from plans.models import PlanStatus, SubtaskStatus
from tests.support.factories import subtask
from tests.support.flows import event_types, finished, start, subtask_in, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.faults, pytest.mark.usefixtures("engine")]


def test_subtask_of_a_killed_worker_runs_again_and_the_plan_completes(engine):
    plan = start(subtask("long", input={"sleep_ms": 2000, "result": "survived"}), subtask("next", "long"))
    running = subtask_in(plan, "long", SubtaskStatus.RUNNING)
    child = int(running.worker.rsplit(":", 1)[1])

    os.kill(child, signal.SIGKILL)

    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    long = plan.subtasks.get(key="long")
    assert (long.result, long.attempts, long.lost_runs) == ("survived", 2, 1)
    assert event_types(plan).count("subtask.completed") == 2


def test_plan_finishes_after_the_broker_loses_every_message():
    # Four workers' slots, eight subtasks: half of them wait in the queue when it is flushed.
    plan = start(
        *[subtask(f"s{i}", input={"sleep_ms": 1000}) for i in range(8)],
        subtask("end", *[f"s{i}" for i in range(8)]),
        max_parallel=8,
    )
    wait_for(lambda: plan.subtasks.filter(status=SubtaskStatus.RUNNING).count() >= 3)
    assert plan.subtasks.filter(status=SubtaskStatus.QUEUED).exists()

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()

    plan = finished(plan, timeout=60)
    assert plan.status == PlanStatus.COMPLETED
    assert set(plan.subtasks.values_list("status", flat=True)) == {SubtaskStatus.DONE}
    resent = plan.events.filter(type="subtask.resent").values_list("payload__subtask_key", flat=True)
    assert len(resent) >= 1
    assert all(attempts == 1 for attempts in plan.subtasks.values_list("attempts", flat=True))


def test_frozen_worker_past_its_lease_is_overtaken_and_its_late_result_ignored(engine):
    # Lease: 3s timeout + 2s grace + 2s slack. The run itself takes 2.5s.
    plan = start(subtask("frozen", input={"sleep_ms": 2500, "result": "done"}, timeout_s=3))
    running = subtask_in(plan, "frozen", SubtaskStatus.RUNNING)
    frozen = engine.owner_of(running)
    frozen.signal_group(signal.SIGSTOP)
    try:
        # The reconciler gives the run to the other worker once the lease has passed.
        subtask_in(plan, "frozen", SubtaskStatus.DONE, timeout=30)
    finally:
        frozen.signal_group(signal.SIGCONT)
    plan = finished(plan)
    done = plan.subtasks.get()
    assert (done.attempts, done.lost_runs, done.result) == (2, 1, "done")
    assert done.worker.split("@")[0] != running.worker.split("@")[0]

    # Give the thawed worker time to finish its stale run: it must change nothing.
    time.sleep(4)
    done.refresh_from_db()
    assert (done.status, done.attempts) == (SubtaskStatus.DONE, 2)
    assert event_types(plan).count("subtask.completed") == 1
    assert event_types(plan).count("agent.execution.completed") == 1


def test_a_subtask_that_kills_its_worker_every_time_is_failed_as_poison():
    plan = finished(
        start(subtask("poison", agent="python", input={"callable": "tests.support.agents.crash"}), subtask("fine")),
        timeout=60,
    )
    poison = plan.subtasks.get(key="poison")
    assert poison.status == SubtaskStatus.FAILED
    assert poison.error.startswith("Poison: its run was lost 3 times")
    assert poison.attempts == 3
    assert plan.status == PlanStatus.FAILED
    assert plan.subtasks.get(key="fine").status == SubtaskStatus.DONE
