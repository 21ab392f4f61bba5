"""Messages delivered twice, a chord callback lost, a frozen worker thawed late: each run's effect is applied once."""

import re
import signal
import time

import pytest

from execution.canvas import Run, run_signature
from plans.models import PlanStatus, Subtask, SubtaskStatus
from tests.faults.launch import record_figures
from tests.faults.ledger import ledger_problems, ledger_runs, ledger_subtask
from tests.support.cluster import Cluster
from tests.support.flows import event_types, finished, start, subtask_in, wait_for
from tests.support.invariants import assert_invariants, reconciler_redrove

pytestmark = [pytest.mark.slow, pytest.mark.faults]


def send_again(running: Subtask) -> None:
    """Publish the subtask's run message once more: same task, same kwargs, same task id."""
    run = Run(subtask_id=running.pk, attempt=running.attempts, task_id=running.task_id, timeout_s=30)
    run_signature(run).apply_async()


def handled(cluster: Cluster, task_id: str) -> int:
    """Return how many times workers have finished a message of this task id."""
    finished_line = re.compile(rf"Task execution\.run_subtask\[{task_id}\] succeeded".encode())
    return sum(len(finished_line.findall(worker.log.read_bytes())) for worker in cluster.workers.values())


def test_a_run_delivered_twice_while_running_and_after_done_starts_its_agent_once(faults):
    plan = start(ledger_subtask("slow", sleep_ms=6000), ledger_subtask("next", "slow"))
    running = subtask_in(plan, "slow", SubtaskStatus.RUNNING)

    send_again(running)
    # Another pool process takes the copy and drops it while the first run goes on.
    wait_for(lambda: handled(faults.cluster, running.task_id) == 1, timeout=10)
    assert Subtask.objects.get(pk=running.pk).status == SubtaskStatus.RUNNING

    subtask_in(plan, "slow", SubtaskStatus.DONE, timeout=30)
    send_again(running)
    wait_for(lambda: handled(faults.cluster, running.task_id) == 3, timeout=10)

    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED
    slow = plan.subtasks.get(key="slow")
    assert (slow.attempts, slow.lost_runs) == (1, 0)
    assert ledger_runs(plan) == {"slow": [1], "next": [1]}
    assert event_types(plan).count("subtask.started") == 2
    assert not ledger_problems(plan)
    assert_invariants(plan)
    record_figures("duplicate run message", copies=2, agent_runs_of_the_subtask=1, completions=1)


def test_a_lost_chord_callback_is_made_up_by_the_reconciler(faults):
    control = faults.cluster["control"]
    faults.stop_beat()
    faults.stop_consuming(control, "control")
    plan = start(ledger_subtask("left"), ledger_subtask("right"), ledger_subtask("join", "left", "right"))
    subtask_in(plan, "left", SubtaskStatus.DONE)
    subtask_in(plan, "right", SubtaskStatus.DONE)

    callback = wait_for(lambda: faults.messages_in("control"), timeout=10)
    assert [message["headers"]["task"] for message in callback] == ["execution.advance_plan"]
    assert faults.purge("control") == 1
    time.sleep(2)
    assert plan.subtasks.get(key="join").status == SubtaskStatus.PENDING

    lost_at = time.monotonic()
    faults.start_consuming(control, "control")
    faults.start_beat()
    plan = finished(plan, timeout=30)
    assert plan.status == PlanStatus.COMPLETED
    assert f"Reconciler: plan {plan.pk} had nothing in flight: advanced it".encode() in control.log.read_bytes()
    assert not ledger_problems(plan)
    assert_invariants(plan)
    record_figures("chord callback purged", completed_after_s=round(time.monotonic() - lost_at, 1), advanced=1)


def test_a_frozen_worker_is_overtaken_and_thawed_late_its_run_changes_nothing(faults):
    # Lease: 3 s time limit + 2 s grace + 2 s slack; the run alone would take 2.5 s.
    plan = start(ledger_subtask("frozen", sleep_ms=2500, timeout_s=3), ledger_subtask("next", "frozen"))
    running = subtask_in(plan, "frozen", SubtaskStatus.RUNNING)
    wait_for(lambda: ledger_runs(plan).get("frozen"))
    frozen = faults.cluster.owner_of(running)
    frozen.signal_group(signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        subtask_in(plan, "frozen", SubtaskStatus.DONE, timeout=30)
        overtaken_s = time.monotonic() - frozen_at
    finally:
        frozen.signal_group(signal.SIGCONT)
    plan = finished(plan)
    time.sleep(4)  # the thawed run finishes, or is ended by its time limit: either way it is stale

    done = plan.subtasks.get(key="frozen")
    assert (done.status, done.attempts, done.lost_runs) == (SubtaskStatus.DONE, 2, 1)
    assert done.result["attempt"] == 2
    assert done.worker.split("@")[0] != running.worker.split("@")[0]
    assert ledger_runs(plan)["frozen"] == [1, 2]
    assert event_types(plan).count("subtask.completed") == 2
    assert not ledger_problems(plan)
    assert_invariants(plan)
    record_figures(
        "frozen worker",
        overtaken_after_s=round(overtaken_s, 1),
        agent_runs_of_the_subtask=2,
        completions=1,
        resent=reconciler_redrove([plan.pk]),
    )
