"""Processes tests and benchmarks start: Celery workers, beat and uvicorn, as users run them."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
from celery import current_app
from django.db import connection

from plans.models import Subtask
from scripts.servers import free_port
from scripts.servers import stop as stop_process

ROOT = Path(__file__).resolve().parents[1]
# Shortened timings, set the same way in the workers' environment and in the test process.
FAST = {
    "EXECUTION_RECONCILE_INTERVAL_S": "1",
    "EXECUTION_QUEUED_STALL_S": "3",
    "EXECUTION_RETRY_BACKOFF_BASE_S": "0.2",
    "EXECUTION_RETRY_BACKOFF_CAP_S": "1",
    "EXECUTION_HARD_LIMIT_GRACE_S": "2",
    "EXECUTION_LEASE_SLACK_S": "2",
    "EXECUTION_MAX_LOST_RUNS": "3",
    "EXECUTION_PYTHON_AGENT_MODULES": "tests.agents:*,tests.faults.ledger.record",
    "WEBHOOK_SECRET": "webhook-secret-for-tests",
    # The webhook tests' receivers listen on loopback, which webhooks may not reach otherwise.
    "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    # A receiver that answers too slowly is cut off soon, and retried soon.
    "WEBHOOK_DEADLINE_S": "3",
    "WEBHOOK_RETRY_BACKOFF_S": "1",
    # Small enough for a test agent to go over it cheaply.
    "EXECUTION_MAX_RESULT_BYTES": "100000",
}
# What workers get on top, as in the Procfile. Celery's Django fixup closes a worker's
# connections before and after every task all the same: each task runs on a fresh one.
WORKER_ENV = {"DATABASE_CONN_MAX_AGE": "600"}


class Worker:
    """A `celery -A config ...` process in its own process group."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], log_dir: Path, queues: tuple[str, ...] = ()
    ) -> None:
        self.name = name
        self.queues = queues
        self.hostname = f"{name}@{socket.gethostname()}"
        self.log = log_dir / f"{name}.log"
        self.args, self.env = args, env
        self.process = self._start()

    def _start(self) -> subprocess.Popen:
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def restart(self) -> None:
        """Start the same worker again (same name, queues and log), once the previous process has gone."""
        self.stop()
        self.process = self._start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal_group(self, signum: int) -> None:
        os.killpg(self.pid, signum)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.signal_group(signal.SIGCONT)
            self.signal_group(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.process.wait()

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


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
        """Stop consuming and stop beat (letting its last ticks expire): nothing touches the database.

        Between tests the database is truncated; a worker or reconciler query racing
        TRUNCATE can deadlock with it, and tasks sent by tests without workers must not run.
        """
        self._consumers(consume=False)
        self.workers["beat"].signal_group(signal.SIGSTOP)
        time.sleep(float(FAST["EXECUTION_RECONCILE_INTERVAL_S"]) + 0.3)

    def wake(self) -> None:
        self._consumers(consume=True)
        self.workers["beat"].signal_group(signal.SIGCONT)

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{worker.tail()}" for name, worker in self.workers.items())


class WebServer:
    """The ASGI app under uvicorn, as users run it, on a free port."""

    APPLICATION_NAME = "web-under-test"

    def __init__(self, env: dict[str, str], log_dir: Path, args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / "web.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "config.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *args,
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"uvicorn did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        stop_process(self.process, signal.SIGTERM)

    @classmethod
    @contextlib.contextmanager
    def running(cls, env: dict[str, str], log_dir: Path) -> Iterator["WebServer"]:
        """Start uvicorn, yield it once it accepts connections, stop it afterwards."""
        server = cls(env, log_dir)
        try:
            server.wait_ready()
            yield server
        finally:
            server.stop()


def current_database_url() -> str:
    """Return a libpq URL of the database Django uses now (the test database in tests)."""
    params = connection.get_connection_params()
    keys = {"host", "port", "user", "password", "dbname"}
    return psycopg.conninfo.make_conninfo(**{key: value for key, value in params.items() if key in keys and value})
