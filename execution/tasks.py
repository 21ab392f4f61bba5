"""Celery entry points of the engine: ids in, service calls, nothing else."""

import os
from typing import Any
from uuid import UUID

from celery import Task, shared_task
from celery.exceptions import TimeLimitExceeded
from django.conf import settings
from django.db import close_old_connections

from execution import canvas
from execution.engine import reconciler
from execution.engine.plan_flow import plan_advance, plan_advance_after_run
from execution.engine.runs import RunDeferred, subtask_hard_timeout, subtask_run
from execution.webhooks import WebhookFailed, webhook_deliver


class SubtaskTask(Task):
    """The class of run_subtask: the worker's main process calls its on_failure when a run passes its hard limit."""

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if isinstance(exc, TimeLimitExceeded):
            # The main process keeps its connection between such rare calls: it may be stale.
            close_old_connections()
            subtask_hard_timeout(
                subtask_id=UUID(kwargs["subtask_id"]),
                attempt=kwargs["attempt"],
                task_id=task_id,
                hard_limit_s=float(exc.args[0]) if exc.args else 0.0,
            )


@shared_task(
    name="execution.run_subtask",
    base=SubtaskTask,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
)
def run_subtask(self, *, subtask_id: str, attempt: int, agent: str = "") -> None:
    """Run one attempt of a subtask; on an agent error, retry as the next attempt after a backoff.

    A run over its agent's limits is sent again as the same attempt, after a delay (no worker waits).
    A run sent on its own carries the plan's advance as its chain's next step: this worker
    takes it and advances the plan itself, rather than sending it to another task.
    """
    worker = f"{self.request.hostname}:{os.getpid()}"
    named = {"agent": agent} if agent else {}
    try:
        delay = subtask_run(subtask_id=UUID(subtask_id), attempt=attempt, worker=worker, agent_name=agent)
    except RunDeferred as deferred:
        raise self.retry(
            countdown=deferred.delay, kwargs={"subtask_id": subtask_id, "attempt": attempt, **named}
        ) from None
    if delay is not None:
        raise self.retry(countdown=delay, kwargs={"subtask_id": subtask_id, "attempt": attempt + 1, **named})
    plan_id = canvas.advance_taken(self.request.chain)
    if plan_id is not None:
        plan_advance_after_run(plan_id=plan_id)


@shared_task(name="execution.advance_plan", acks_late=True, ignore_result=True)
def advance_plan(*, plan_id: str) -> None:
    """Dispatch a plan's next batch, or finish it (a chord callback; also sent after single runs)."""
    plan_advance(plan_id=UUID(plan_id))


@shared_task(name="execution.reconcile", ignore_result=True)
def reconcile() -> dict[str, int]:
    """Re-drive plans whose work is not in flight (Celery beat)."""
    return reconciler.reconcile()


@shared_task(
    name="execution.deliver_webhook",
    acks_late=True,
    ignore_result=True,
    # Each attempt ends by its deadline, however slowly the receiver answers (the soft limit
    # interrupts the request; the hard one, a little later, ends the worker process if not).
    soft_time_limit=settings.WEBHOOK_DEADLINE_S,
    time_limit=settings.WEBHOOK_DEADLINE_S + 5,
    # Retried with exponential backoff, each delay drawn at random below its cap (full jitter),
    # so deliveries that failed together do not come back together.
    autoretry_for=(WebhookFailed,),
    retry_backoff=settings.WEBHOOK_RETRY_BACKOFF_S,
    retry_backoff_max=settings.WEBHOOK_RETRY_BACKOFF_MAX_S,
    retry_jitter=True,
    max_retries=settings.WEBHOOK_MAX_RETRIES,
)
def deliver_webhook(*, plan_id: str, seq: int) -> None:
    """POST one event to its plan's callback_url, retrying with backoff until it is taken."""
    webhook_deliver(plan_id=UUID(plan_id), seq=seq)
