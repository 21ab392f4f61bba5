"""How the reconciler repairs: re-drive every plan whose expected work is not in flight.

Run by Celery beat every EXECUTION_RECONCILE_INTERVAL_S. The database is the source of
truth, so losing every broker message delays a plan and never loses it:
- a running subtask whose worker died (its lease lock is free) or hung (past its lease)
  is dispatched again as a new attempt, or failed as poison after too many lost runs;
- a queued subtask whose message is gone (not started long after it was due, while its
  queue is empty and no worker holds it, or never sent) is sent again;
- a plan with nothing in flight and nothing waiting, and no event for
  EXECUTION_QUEUED_STALL_S (a chord callback or an advance message was lost), is advanced.
Every repair locks the plan and re-checks, so reconcilers running at once, or a
repair racing the original message, change nothing twice.
"""

import logging
from datetime import timedelta
from typing import Any
from uuid import UUID

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone
from kombu.exceptions import ChannelError

from execution.engine.plan_flow import dispatch, plan_advance, plan_lock_for
from execution.engine.runs import leases_abandoned, recover_lost_run
from execution.events import event_append
from execution.models import Event, ExecState
from execution.states import SUBTASK_ACTIVE
from plans.models import Plan, PlanStatus, Subtask
from plans.models import SubtaskStatus as S

logger = logging.getLogger(__name__)

BATCH_LIMIT = 500
# How long the reconciler waits for workers to say which of its candidates' messages they hold:
# a worker that does not answer in time (frozen, gone) holds nothing.
HELD_QUERY_TIMEOUT_S = 0.5


def reconcile() -> dict[str, int]:
    """Repair what is stuck; return how many runs, messages and plans were re-driven."""
    report = {"lost_runs": 0, "resent": 0, "advanced": 0}
    now = timezone.now()

    running = list(
        Subtask.objects.filter(status=S.RUNNING, plan__status=PlanStatus.IN_PROGRESS).values_list(
            "pk", "attempts", "lease_expires_at"
        )[:BATCH_LIMIT]
    )
    abandoned = leases_abandoned((pk, attempts) for pk, attempts, _ in running)
    for pk, attempts, lease_expires_at in running:
        if pk in abandoned:
            report["lost_runs"] += _recover(pk, attempts, "its worker is gone (lease lock released)")
        elif lease_expires_at is not None and lease_expires_at < now:
            report["lost_runs"] += _recover(pk, attempts, "its run is past its lease (worker hung or frozen)")

    stalled = list(
        Subtask.objects.filter(
            status=S.QUEUED,
            plan__status=PlanStatus.IN_PROGRESS,
            queued_at__lt=now - timedelta(seconds=settings.EXECUTION_QUEUED_STALL_S),
        )
        .exclude(plan__execution__state=ExecState.PAUSED)
        .values_list("pk", "task_id", "queued_at")[:BATCH_LIMIT]
    )
    if stalled:
        queue_empty = subtask_queue_length() == 0
        candidates = [(pk, task_id, queued_at) for pk, task_id, queued_at in stalled if queue_empty or not task_id]
        # A worker may have taken the message from the queue a moment ago and not yet started the
        # run (or hold it for a countdown): the queue is empty, and yet the message is in flight.
        held = tasks_held_by_workers([task_id for _, task_id, _ in candidates if task_id])
        for pk, task_id, queued_at in candidates:
            if task_id not in held:
                report["resent"] += _resend(pk, queued_at)

    in_flight = Subtask.objects.filter(plan=OuterRef("pk"), status__in=SUBTASK_ACTIVE)
    # A plan whose last run has just settled waits for its chord callback (or the resume's
    # advance) for a moment: only one with nothing logged for the stall time is stuck.
    last_event = Event.objects.filter(plan=OuterRef("pk")).order_by("-seq").values("created_at")[:1]
    idle = (
        Plan.objects.filter(status=PlanStatus.IN_PROGRESS)
        .exclude(execution__state=ExecState.PAUSED)
        .exclude(Exists(in_flight))
        .annotate(last_event_at=Subquery(last_event))
        .filter(last_event_at__lt=now - timedelta(seconds=settings.EXECUTION_QUEUED_STALL_S))
        .values_list("pk", flat=True)[:BATCH_LIMIT]
    )
    for plan_id in idle:
        plan_advance(plan_id=plan_id)
        # Its chord callback, or the advance after a single run, was lost.
        logger.warning("Reconciler: plan %s had nothing in flight: advanced it", plan_id)
        report["advanced"] += 1

    return report


def _recover(subtask_id: UUID, attempts: int, reason: str) -> int:
    with transaction.atomic():
        plan = plan_lock_for(subtask_id)
        subtask = Subtask.objects.get(pk=subtask_id)
        # Re-checked under the plan's lock: a run that finished meanwhile is left alone.
        if plan.status != PlanStatus.IN_PROGRESS or subtask.status != S.RUNNING or subtask.attempts != attempts:
            return 0
        poisoned = recover_lost_run(plan=plan, subtask=subtask, reason=reason)
        logger.warning(
            "Reconciler: plan %s: run %s of subtask %r was lost (%s): %s",
            plan.pk,
            attempts,
            subtask.key,
            reason,
            "failed it as poison" if poisoned else "dispatched it again",
        )
        return 1


def _resend(subtask_id: UUID, queued_at: Any) -> int:
    with transaction.atomic():
        plan = plan_lock_for(subtask_id)
        subtask = Subtask.objects.get(pk=subtask_id)
        if plan.status != PlanStatus.IN_PROGRESS or subtask.status != S.QUEUED or subtask.queued_at != queued_at:
            return 0
        # Same attempt number: if the old message turns up after all, only one run starts.
        dispatch(plan, [subtask], batch=False, reason="re-sent")
        event_append(
            plan_id=plan.pk,
            type="subtask.resent",
            payload={
                "subtask_id": subtask.pk,
                "subtask_key": subtask.key,
                "attempt": subtask.attempts + 1,
                "reason": "its message was not in flight",
            },
        )
        logger.warning(
            "Reconciler: plan %s: re-sent subtask %r (attempt %s): its message was not in flight",
            plan.pk,
            subtask.key,
            subtask.attempts + 1,
        )
        return 1


def tasks_held_by_workers(task_ids: list[str]) -> set[str]:
    """Return which of these task ids a live worker has reserved, is running or holds for later."""
    if not task_ids:
        return set()
    replies = current_app.control.inspect(timeout=HELD_QUERY_TIMEOUT_S).query_task(*task_ids) or {}
    return {task_id for reply in replies.values() for task_id in reply}


def subtask_queue_length() -> int:
    """Return how many messages wait in the broker's subtask queue."""
    with current_app.connection_for_read() as connection:
        try:
            channel = connection.default_channel
            return channel.queue_declare(queue="subtasks", passive=True).message_count  # type: ignore[attr-defined]
        except ChannelError:  # Redis drops an empty list's key: the queue "does not exist"
            return 0
