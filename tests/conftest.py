"""Shared fixtures: real Celery worker processes, beat, Redis and PostgreSQL; and the engine in this process.

The session starts two subtask workers, a control worker and beat as subprocesses
(`celery -A config ...`) against the test database, so tests can kill, freeze and
resume them. Timings are shortened through the same environment variables users set.
Tests that use them are marked `processes`; the others (make test-fast) run the engine
in this process, its messages captured (tests/support/outbox.py: outbox, worker).
"""

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import current_app

from execution.models import Event
from execution.services import plan_cancel
from plans.models import Plan, PlanStatus, Subtask, SubtaskStatus
from scripts.processes import WebServer, Worker, current_database_url
from tests.support.cluster import FAST, Cluster
from tests.support.flows import wait_for

# The fake OpenAI-compatible server's fixtures (openai_server, fake_openai) and the test agents.
pytest_plugins = ["tests.fakes.openai_server", "tests.support.agents_file", "tests.support.outbox"]

METRICS_TOKEN = "metrics-token-for-tests"  # the web fixture's /metrics answers it
# The approval rules of the workers and the web process: they fit only tools named policy_*.
POLICY_FILE = Path(__file__).parent / "support" / "policy.json"
SETTING_TYPES: dict[str, Callable[[str], Any]] = {
    "EXECUTION_PYTHON_AGENT_MODULES": lambda value: value.split(","),
    "WEBHOOK_SECRET": str,
    "WEBHOOK_ALLOWED_HOSTS": lambda value: value.split(","),
    "WEBHOOK_RETRY_BACKOFF_S": int,
    "EXECUTION_MAX_RESULT_BYTES": int,
    "EXECUTION_MAX_CONTEXT_BYTES": int,
    "EXECUTION_MAX_CONVERSATION_BYTES": int,
    "EXECUTION_MAX_TOOL_CALLS_PER_ANSWER": int,
}


@pytest.fixture(scope="session")
def cluster(django_db_setup, django_db_blocker, tmp_path_factory, test_agents) -> Iterator[Cluster]:
    with django_db_blocker.unblock():
        database_url = current_database_url()
    log_dir = tmp_path_factory.mktemp("workers")
    env = {
        **os.environ,
        **FAST,
        "DATABASE_URL": database_url,
        "PYTHONUNBUFFERED": "1",
        "EXECUTION_AGENTS_FILE": str(test_agents.path),
        "APPROVALS_POLICY_FILE": str(POLICY_FILE),
        "EXECUTION_WORKSPACE_DIR": str(test_agents.workspace),
        **test_agents.env,
        # The service's settings plus agents only tests register (a class returning no step).
        "DJANGO_SETTINGS_MODULE": "tests.support.worker_settings",
    }
    common = ["--loglevel", "INFO", "--without-gossip", "--without-mingle", "--pool", "prefork"]
    current_app.control.purge()

    def worker(name: str, *queues: str) -> Worker:
        args = ["worker", "--queues", ",".join(queues), "--hostname", f"{name}@%h", "--concurrency", "2", *common]
        return Worker(name, args, env, log_dir, queues=queues)

    workers = [
        worker("subtasks1", "subtasks"),
        worker("subtasks2", "subtasks"),
        worker("control", "control", "webhooks"),
        Worker("beat", ["beat", "--loglevel", "INFO", "--schedule", str(log_dir / "beat-schedule")], env, log_dir),
    ]
    cluster = Cluster(workers)
    try:
        deadline = time.monotonic() + 60
        while len(current_app.control.ping(timeout=0.5) or []) < 3:
            dead = [w.name for w in workers if w.process.poll() is not None]
            if dead or time.monotonic() > deadline:
                pytest.fail(f"Workers did not start ({dead or 'timeout'}):\n{cluster.logs()}")
        cluster.quiesce()
        yield cluster
    finally:
        for process in workers:
            process.stop()


@pytest.fixture(scope="session")
def web(django_db_setup, django_db_blocker, tmp_path_factory, test_agents) -> Iterator[WebServer]:
    """uvicorn serving config.asgi against the test database, as docs/processes.md says, with nothing collected.

    Its STATIC_ROOT is empty, as on a fresh clone: the admin's files come from the apps' folders.
    """
    workdir = tmp_path_factory.mktemp("web")
    with django_db_blocker.unblock():
        database_url = f"{current_database_url()} application_name={WebServer.APPLICATION_NAME}"
    env = {
        **os.environ,
        **FAST,
        "DATABASE_URL": database_url,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "EXECUTION_AGENTS_FILE": str(test_agents.path),
        "APPROVALS_POLICY_FILE": str(POLICY_FILE),
        "DJANGO_STATIC_ROOT": str(workdir / "static"),
        "METRICS_TOKEN": METRICS_TOKEN,
    }
    env.pop("DJANGO_DEBUG", None)
    with WebServer.running(env, workdir) as server:
        yield server


@pytest.fixture(autouse=True)
def _fast_settings(settings) -> None:
    """The same short timings in this process as in the workers."""
    for name, value in FAST.items():
        setattr(settings, name, SETTING_TYPES.get(name, float)(value))
    # Test users' passwords hash in no time; the web process under test verifies them all the same.
    settings.PASSWORD_HASHERS = ["tests.support.factories.QuickPBKDF2PasswordHasher", *settings.PASSWORD_HASHERS]


@pytest.fixture
def engine(cluster, transactional_db, request) -> Iterator[Cluster]:
    """Workers and beat running against a clean database; stops what the test left running.

    Unless the test is marked `faults`, its plans must have run on the primary paths alone
    (chord callbacks, decisions' enqueues): the reconciler re-sending a message there
    means a message was lost where none should have been.
    """
    current_app.control.purge()
    cluster.wake()
    yield cluster
    primary_paths_only = request.node.get_closest_marker("faults") is None
    resent = (
        list(Event.objects.filter(type="subtask.resent").values_list("payload", flat=True))
        if primary_paths_only
        else []
    )
    for worker in cluster.workers.values():
        worker.signal_group(signal.SIGCONT)
    for plan in Plan.objects.filter(status__in=[PlanStatus.DRAFT, PlanStatus.APPROVED, PlanStatus.IN_PROGRESS]):
        plan_cancel(plan_id=plan.pk, actor="teardown")
    wait_for(lambda: not Subtask.objects.filter(status=SubtaskStatus.RUNNING).exists(), timeout=30)
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(cluster.logs())
    cluster.quiesce()
    if primary_paths_only and resent:
        pytest.fail(f"The reconciler re-sent {len(resent)} message(s) in a test that injected no fault: {resent}")


# Fixtures that start processes of the service (uvicorn, Celery workers): tests using them are not fast.
PROCESS_FIXTURES = {"cluster", "web", "guarded_web"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `processes` every test that uses the worker cluster or the web server (make test-fast leaves them out)."""
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.processes)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report
