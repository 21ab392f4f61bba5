"""The test session's worker cluster: its shortened timings and the Celery processes tests start, kill and freeze."""

import signal
import time
from pathlib import Path

from celery import current_app

from plans.models import Subtask
from scripts.processes import Worker

# Shortened timings, set the same way in the workers' environment and in the test process.
FAST = {
    "EXECUTION_RECONCILE_INTERVAL_S": "1",
    "EXECUTION_QUEUED_STALL_S": "3",
    "EXECUTION_RETRY_BACKOFF_BASE_S": "0.2",
    "EXECUTION_RETRY_BACKOFF_CAP_S": "1",
    "EXECUTION_HARD_LIMIT_GRACE_S": "2",
    "EXECUTION_LEASE_SLACK_S": "2",
    "EXECUTION_MAX_LOST_RUNS": "3",
    "EXECUTION_PYTHON_AGENT_MODULES": "tests.support.agents:*,tests.faults.ledger.record",
    "WEBHOOK_SECRET": "webhook-secret-for-tests",
    # The webhook tests' receivers listen on loopback, which webhooks may not reach otherwise.
    "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    # A receiver that answers too slowly is cut off soon, and retried soon.
    "WEBHOOK_DEADLINE_S": "3",
    "WEBHOOK_RETRY_BACKOFF_S": "1",
    # Small enough for a test agent to go over it cheaply.
    "EXECUTION_MAX_RESULT_BYTES": "100000",
    # Two results near the limit above are over it; the test agents' conversations stay far below the next.
    "EXECUTION_MAX_CONTEXT_BYTES": "150000",
    "EXECUTION_MAX_CONVERSATION_BYTES": "200000",
    "EXECUTION_MAX_TOOL_CALLS_PER_ANSWER": "8",
    # A web process closes the pooled connections a burst of requests opened soon after it.
    "WEB_DATABASE_POOL_MAX_IDLE_S": "1",
}


class Cluster:
    def __init__(self, workers: list[Worker]) -> None:
        self.workers = {worker.name: worker for worker in workers}

    def __getitem__(self, name: str) -> Worker:
        return self.workers[name]

    def owner_of(self, subtask: Subtask) -> Worker:
        """Return the worker whose pool process runs `subtask` now."""
        child = int(subtask.worker.rsplit(":", 1)[1])
        parent = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
        return next(worker for worker in self.workers.values() if worker.pid == parent)

    def _consumers(self, *, consume: bool) -> None:
        for worker in self.workers.values():
            for queue in worker.queues:
                control = current_app.control.add_consumer if consume else current_app.control.cancel_consumer
                control(queue, destination=[worker.hostname], reply=True, timeout=5)

    def quiesce(self) -> None:
        """Stop consuming and stop beat, then wait until no worker runs or holds a task: nothing touches the database.

        Between tests the database is truncated; a worker or reconciler query racing
        TRUNCATE can deadlock with it, and tasks sent by tests without workers must not run.
        A worker that stopped consuming still runs what it had taken (active) or prefetched
        (reserved), so the workers are asked until they hold nothing.
        """
        self._consumers(consume=False)
        self.workers["beat"].signal_group(signal.SIGSTOP)
        hostnames = [worker.hostname for worker in self.workers.values() if worker.queues]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if holding_nothing(hostnames):
                return
            time.sleep(0.05)

    def wake(self) -> None:
        self._consumers(consume=True)
        self.workers["beat"].signal_group(signal.SIGCONT)

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{worker.tail()}" for name, worker in self.workers.items())


def holding_nothing(hostnames: list[str]) -> bool:
    """Return whether every one of these workers answers that it runs no task and holds none reserved."""
    inspect = current_app.control.inspect(destination=hostnames, timeout=2, limit=len(hostnames))
    held = [inspect.active() or {}, inspect.reserved() or {}]
    answered = all(len(replies) == len(hostnames) for replies in held)
    return answered and not any(tasks for replies in held for tasks in replies.values())
