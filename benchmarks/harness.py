"""Start and stop the worker processes a benchmark measures, and watch Redis while it runs."""

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from celery import current_app
from django.conf import settings

from tests.processes import FAST, WORKER_ENV, Worker, current_database_url


@contextlib.contextmanager
def workers(*, result_backend: str, include: str = "") -> Iterator[None]:
    """Run a subtask worker (4 processes) and a control worker (2) with this result backend."""
    env = {
        **os.environ,
        **FAST,
        **WORKER_ENV,
        "DATABASE_URL": current_database_url(),
        "CELERY_RESULT_BACKEND": result_backend,
        "LOG_LEVEL": "WARNING",
    }
    extra = ["--include", include] if include else []
    common = ["--loglevel", "WARNING", "--without-gossip", "--without-mingle", *extra]
    log_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    current_app.control.purge()
    started = [
        Worker(
            "subtasks",
            ["worker", "--queues", "subtasks", "--hostname", "bench-subtasks@%h", "--concurrency", "4", *common],
            env,
            log_dir,
        ),
        Worker(
            "control",
            ["worker", "--queues", "control", "--hostname", "bench-control@%h", "--concurrency", "2", *common],
            env,
            log_dir,
        ),
    ]
    try:
        deadline = time.monotonic() + 60
        while len(current_app.control.ping(timeout=0.5) or []) < len(started):
            if time.monotonic() > deadline:
                raise RuntimeError("benchmark workers did not start: " + "\n".join(w.tail() for w in started))
        yield
    finally:
        for worker in started:
            worker.stop()


class RedisWatch:
    """Sample the broker's memory and count the bytes written to it while a run lasts."""

    def __init__(self) -> None:
        self.client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        self.peak_memory = 0
        self._stop = threading.Event()

    def __enter__(self) -> "RedisWatch":
        self.input_before = self.client.info("stats")["total_net_input_bytes"]
        self.memory_before = self.client.info("memory")["used_memory"]
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_memory = max(self.peak_memory, self.client.info("memory")["used_memory"])
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.bytes_written = self.client.info("stats")["total_net_input_bytes"] - self.input_before
        self.peak_growth = max(0, self.peak_memory - self.memory_before)


def megabytes(count: int) -> str:
    return f"{count / 1_000_000:7.1f} MB"


def in_subprocess(module: str, *, result_backend: str) -> dict:
    """Run `python -m <module>` with this result backend and return the JSON it prints last.

    The process that sends a chord must use the same result backend as the workers (the
    chord's counter lives there), so each backend is measured in a process of its own.
    """
    env = {**os.environ, "CELERY_RESULT_BACKEND": result_backend}
    done = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def redis_results_url() -> str:
    """Return a Redis URL next to the broker's (the following database number) for results."""
    base, _, db = settings.CELERY_BROKER_URL.rpartition("/")
    return f"{base}/{int(db) + 1}" if db.isdigit() else settings.CELERY_BROKER_URL
