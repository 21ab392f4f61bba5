"""Shared fixtures: real Celery worker processes, beat, Redis and PostgreSQL.

The session starts two subtask workers, a control worker and beat as subprocesses
(`celery -A config ...`) against the test database, so tests can kill, freeze and
resume them. Timings are shortened through the same environment variables users set.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from celery import current_app
from django.core.management import call_command
from django.db import connection

from execution.services import plan_cancel
from plans.models import Plan, PlanStatus, Subtask, SubtaskStatus
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[1]

FAST = {
    "EXECUTION_RECONCILE_INTERVAL_S": "1",
    "EXECUTION_QUEUED_STALL_S": "3",
    "EXECUTION_RETRY_BACKOFF_BASE_S": "0.2",
    "EXECUTION_RETRY_BACKOFF_CAP_S": "1",
    "EXECUTION_HARD_LIMIT_GRACE_S": "2",
    "EXECUTION_LEASE_SLACK_S": "2",
    "EXECUTION_MAX_LOST_RUNS": "3",
    "EXECUTION_PYTHON_AGENT_MODULES": "tests",
    "WEBHOOK_SECRET": "webhook-secret-for-tests",
}
SETTING_TYPES: dict[str, Callable[[str], Any]] = {
    "EXECUTION_PYTHON_AGENT_MODULES": lambda value: value.split(","),
    "WEBHOOK_SECRET": str,
}


class Worker:
    """A `celery -A config ...` process in its own process group."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", *args],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

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

    def quiesce(self) -> None:
        """Stop beat and let its last ticks expire, so no reconciler touches the database.

        Between tests the database is truncated; a reconciler query racing TRUNCATE can
        deadlock with it.
        """
        self.workers["beat"].signal_group(signal.SIGSTOP)
        time.sleep(float(FAST["EXECUTION_RECONCILE_INTERVAL_S"]) + 0.3)

    def wake(self) -> None:
        self.workers["beat"].signal_group(signal.SIGCONT)

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{worker.tail()}" for name, worker in self.workers.items())


def _test_database_url() -> str:
    params = connection.get_connection_params()
    keys = {"host", "port", "user", "password", "dbname"}
    return psycopg.conninfo.make_conninfo(**{key: value for key, value in params.items() if key in keys and value})


@pytest.fixture(scope="session")
def cluster(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[Cluster]:
    with django_db_blocker.unblock():
        database_url = _test_database_url()
    log_dir = tmp_path_factory.mktemp("workers")
    env = {**os.environ, **FAST, "DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
    common = ["--loglevel", "INFO", "--without-gossip", "--without-mingle", "--pool", "prefork"]
    current_app.control.purge()
    workers = [
        Worker(
            "subtasks1",
            ["worker", "--queues", "subtasks", "--hostname", "subtasks1@%h", "--concurrency", "2", *common],
            env,
            log_dir,
        ),
        Worker(
            "subtasks2",
            ["worker", "--queues", "subtasks", "--hostname", "subtasks2@%h", "--concurrency", "2", *common],
            env,
            log_dir,
        ),
        Worker(
            "control",
            ["worker", "--queues", "control,webhooks", "--hostname", "control@%h", "--concurrency", "2", *common],
            env,
            log_dir,
        ),
        Worker("beat", ["beat", "--loglevel", "INFO", "--schedule", str(log_dir / "beat-schedule")], env, log_dir),
    ]
    cluster = Cluster(workers)
    try:
        deadline = time.monotonic() + 60
        while len(current_app.control.ping(timeout=0.5)) < 3:
            dead = [w.name for w in workers if w.process.poll() is not None]
            if dead or time.monotonic() > deadline:
                pytest.fail(f"Workers did not start ({dead or 'timeout'}):\n{cluster.logs()}")
        cluster.quiesce()
        yield cluster
    finally:
        for worker in workers:
            worker.stop()


class WebServer:
    """The ASGI app under uvicorn, as users run it, on a free port."""

    APPLICATION_NAME = "web-under-test"

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
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
        pytest.fail(f"uvicorn did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def web(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[WebServer]:
    """uvicorn serving config.asgi against the test database (for the event stream)."""
    with django_db_blocker.unblock():
        database_url = f"{_test_database_url()} application_name={WebServer.APPLICATION_NAME}"
    env = {**os.environ, **FAST, "DATABASE_URL": database_url, "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost"}
    server = WebServer(env, tmp_path_factory.mktemp("web"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def _static_files(django_test_environment) -> None:
    """Collect static files once: the manifest storage serves the admin's only from there."""
    call_command("collectstatic", interactive=False, verbosity=0)


@pytest.fixture(autouse=True)
def _fast_settings(settings) -> None:
    """The same short timings in this process as in the workers."""
    for name, value in FAST.items():
        setattr(settings, name, SETTING_TYPES.get(name, float)(value))


@pytest.fixture
def engine(cluster, transactional_db, request) -> Iterator[Cluster]:
    """Workers and beat running against a clean database; stops what the test left running."""
    current_app.control.purge()
    cluster.wake()
    yield cluster
    for worker in cluster.workers.values():
        worker.signal_group(signal.SIGCONT)
    for plan in Plan.objects.filter(status__in=[PlanStatus.DRAFT, PlanStatus.APPROVED, PlanStatus.IN_PROGRESS]):
        plan_cancel(plan_id=plan.pk, actor="teardown")
    wait_for(lambda: not Subtask.objects.filter(status=SubtaskStatus.RUNNING).exists(), timeout=30)
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(cluster.logs())
    cluster.quiesce()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report
