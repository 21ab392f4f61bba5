"""The Celery application, configured from Django settings (CELERY_* names), with its logs and traces wired."""

import logging
import os
from contextvars import Token
from typing import Any

from celery import Celery
from celery.app.defaults import DEFAULTS
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    beat_init,
    celeryd_init,
    task_postrun,
    task_prerun,
)
from django.conf import settings

# Connects the start-up checks of every worker (see execution/worker.py).
import execution.worker  # noqa: F401
from common.logs import JsonFormatter, LogContextFilter, log_context_pop, log_context_push
from config import telemetry

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
# Redis results, whatever URL names them, through config/redis_results.py (no subscription per sent task).
app.loader.override_backends.update(
    redis="config.redis_results:RedisBackend", rediss="config.redis_results:RedisBackend"
)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def settings_kept(sender: Celery, source: Any, **kwargs: Any) -> None:
    """Keep each Celery setting, as read from Django's settings, in Celery's own first mapping.

    Celery looks a setting up under each of its names (CELERY_-prefixed, older names) in Django's
    settings before its defaults, and most are not there: sending a task looked up some 150
    attributes of Django's settings, each missing one a raised AttributeError, a quarter of the
    CPU of sending it. Django's settings do not change while a process runs.
    """
    kept = {}
    for key in DEFAULTS:
        try:
            kept[key] = source[key]
        except KeyError:
            continue
    source.update(kept)


_task_contexts: dict[str, Token[dict[str, str]]] = {}


@celeryd_init.connect
def worker_traces(**kwargs: Any) -> None:
    """Trace the worker (its pool processes inherit it: the span exporter restarts its thread after a fork)."""
    telemetry.configure("worker")


@beat_init.connect
def beat_traces(**kwargs: Any) -> None:
    telemetry.configure("beat")


@after_setup_logger.connect
@after_setup_task_logger.connect
def json_log_lines(logger: logging.Logger, **kwargs: Any) -> None:
    """With LOG_FORMAT=json, Celery's own handlers write JSON lines with the task's ids too."""
    if settings.LOG_FORMAT != "json":
        return
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())
        handler.addFilter(LogContextFilter())


@task_prerun.connect
def task_log_context(task_id: str, task: Any, kwargs: dict[str, Any] | None = None, **extra: Any) -> None:
    """Tag the task's log lines with the plan, subtask or approval its arguments name."""
    ids = {key: value for key, value in (kwargs or {}).items() if key in ("plan_id", "subtask_id", "approval_id")}
    _task_contexts[task_id] = log_context_push(task_id=task_id, task_name=task.name, **ids)


@task_postrun.connect
def task_log_context_end(task_id: str, **extra: Any) -> None:
    token = _task_contexts.pop(task_id, None)
    if token is not None:
        log_context_pop(token)
