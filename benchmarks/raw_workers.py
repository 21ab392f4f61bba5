"""The minimal Celery app's workers (benchmarks/raw_celery.py), started as its users would start them.

Every scenario's raw side runs there, not in the engine's workers: no Django, no project code,
Redis results, on the same broker, with as many processes as the engine's stack it is set against.
"""

import os
import time
from pathlib import Path

from benchmarks import raw_celery
from benchmarks.harness import queued_messages, workers_answering
from scripts.processes import ROOT, Worker

# The shell's own variables a worker keeps; beside them it is told only the broker's URL.
KEPT = ("PATH", "HOME", "LANG", "TMPDIR")


def raw_env() -> dict[str, str]:
    """Return a raw worker's whole environment: the shell's own variables and the broker's URL."""
    return {
        **{name: os.environ[name] for name in KEPT if name in os.environ},
        "RAW_BROKER_URL": raw_celery.BROKER,
    }


def raw_worker(name: str, concurrency: int, log_dir: Path, *extra: str) -> Worker:
    """Start `celery -A raw_celery worker --queues raw` with this many processes, from the benchmarks folder."""
    args = ["worker", "--queues", raw_celery.QUEUE, "--concurrency", str(concurrency), "--hostname", f"{name}@%h"]
    return Worker(name, [*args, *extra], raw_env(), log_dir, app="raw_celery", cwd=ROOT / "benchmarks")


def wait_ready(workers: list[Worker], timeout: float = 60) -> None:
    """Wait until every one of these raw workers answers a ping."""
    workers_answering(raw_celery.app, workers, what="raw workers", timeout=timeout)


class RawWorkers:
    """One raw worker shared by the scenarios, started on first use and restarted for another process count.

    It takes the engine's workers' flags (no gossip, no mingle) and nothing of theirs else.
    """

    NAME = "bench-raw"

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.worker: Worker | None = None
        self.concurrency = 0

    def run(self, concurrency: int) -> bool:
        """Make sure the worker runs with `concurrency` processes; return whether it was (re)started."""
        if self.worker is not None and self.concurrency == concurrency and self.worker.process.poll() is None:
            return False
        self.stop()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        raw_celery.app.control.purge()  # what a previous run left would run first
        self.worker = raw_worker(self.NAME, concurrency, self.log_dir, "--without-gossip", "--without-mingle")
        self.concurrency = concurrency
        try:
            wait_ready([self.worker])
        except BaseException:
            self.stop()
            raise
        return True

    def settle(self, timeout: float = 60) -> None:
        """Wait until nothing waits in the raw queue (twice in a row)."""
        deadline, quiet = time.monotonic() + timeout, 0
        while quiet < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the raw queue did not empty within {timeout:.0f}s")
            quiet = quiet + 1 if not queued_messages(raw_celery.QUEUE) else 0
            time.sleep(0.1)

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
            self.concurrency = 0
