"""What a worker does at start (refuse settings that let Redis lose or duplicate work, keep connections), and at end."""

import logging
import time
from typing import Any

import redis
from celery.signals import task_postrun, task_prerun, worker_init, worker_process_shutdown
from django.conf import settings
from django.db import close_old_connections, connections

from execution.metrics import resumes_write

logger = logging.getLogger(__name__)


def configuration_problems() -> list[str]:
    """Return what in the settings breaks delivery guarantees with the Redis broker."""
    problems = []
    visibility = settings.CELERY_VISIBILITY_TIMEOUT_S
    hard_limit = settings.EXECUTION_MAX_TIMEOUT_S + settings.EXECUTION_HARD_LIMIT_GRACE_S
    if hard_limit >= visibility:
        problems.append(
            f"The longest hard time limit ({hard_limit}s = EXECUTION_MAX_TIMEOUT_S + EXECUTION_HARD_LIMIT_GRACE_S) "
            f"is not below the Redis visibility timeout ({visibility}s, CELERY_VISIBILITY_TIMEOUT_S): "
            "Redis would deliver running subtasks to a second worker."
        )
    if settings.EXECUTION_DEFAULT_TIMEOUT_S > settings.EXECUTION_MAX_TIMEOUT_S:
        problems.append("EXECUTION_DEFAULT_TIMEOUT_S is above EXECUTION_MAX_TIMEOUT_S.")
    return problems


def eviction_warning(broker_url: str) -> str | None:
    """Return a warning when the Redis broker may evict keys (queues) under memory pressure."""
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    try:
        client = redis.Redis.from_url(broker_url, socket_connect_timeout=5)
        policy = str(client.config_get("maxmemory-policy").get("maxmemory-policy") or "")
    except redis.RedisError as error:
        return f"Could not read Redis's maxmemory-policy ({error}); make sure it is noeviction."
    if policy.startswith("allkeys"):
        return f"Redis maxmemory-policy is {policy!r}: under memory pressure it can evict queues. Use noeviction."
    return None


@worker_init.connect
def check_worker_configuration(sender: Any = None, **kwargs: Any) -> None:
    """Refuse to start with unsafe time limits; warn loudly about an evicting Redis."""
    problems = configuration_problems()
    if problems:
        message = "Refusing to start the worker:\n- " + "\n- ".join(problems)
        logger.critical(message)
        # Celery logs and swallows a receiver's exceptions; only an exit stops the worker.
        raise SystemExit(message)
    warning = eviction_warning(settings.CELERY_BROKER_URL)
    if warning:
        logger.critical(warning)
    connections_kept(settings.WORKER_DATABASE_CONN_MAX_AGE)


def connections_kept(max_age: int) -> None:
    """Keep this worker's database connections `max_age` seconds (its pool processes inherit it).

    Django's default of 0 suits the web's requests; a worker would open a connection per
    task. The health checks (CONN_HEALTH_CHECKS) and the check at each task's start still
    replace a broken connection before a task uses it.
    """
    for alias in connections:
        connections.settings[alias]["CONN_MAX_AGE"] = max_age
        connections[alias].settings_dict["CONN_MAX_AGE"] = max_age


# When this process's last task ended (time.monotonic()).
_last_task_end = float("-inf")


@task_prerun.connect
def database_connections_checked(sender: Any = None, **kwargs: Any) -> None:
    """Close connections past DATABASE_CONN_MAX_AGE or broken (a database restart), as Django does per request.

    With CELERY_DB_REUSE_MAX set, Celery no longer closes them itself, so a worker keeps
    its connection from task to task. Django then checks a kept connection (`SELECT 1`, with
    CONN_HEALTH_CHECKS) before the task's first query: a round trip as long as a run's own
    statements. A connection a task used without an error less than
    WORKER_DATABASE_HEALTH_CHECK_IDLE_S ago is taken as it is; should the database have
    restarted meanwhile, the hot path's statements reconnect and run once more
    (execution/transitions.py; fenced on the subtask's status and attempt, so a first try that
    did commit changes nothing), and anything else fails its task, which the reconciler repairs.
    """
    close_old_connections()
    if time.monotonic() - _last_task_end >= settings.WORKER_DATABASE_HEALTH_CHECK_IDLE_S:
        return
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and not connection.errors_occurred:
            connection.health_check_done = True  # type: ignore[attr-defined]  # (not in the stubs)


@task_postrun.connect
def task_ended(sender: Any = None, **kwargs: Any) -> None:
    global _last_task_end
    _last_task_end = time.monotonic()


@worker_process_shutdown.connect
def metrics_written(**kwargs: Any) -> None:
    """Write what a pool process noted for /metrics in its last second (it ends without running atexit's handlers)."""
    resumes_write()
