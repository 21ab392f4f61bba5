"""What goes out and what is stopped: queueing subtasks and sending them after commit, cancelling the rest."""

from collections.abc import Sequence
from functools import partial
from typing import Any
from uuid import UUID, uuid4

from django.conf import settings
from django.db import connection, transaction

from execution import canvas
from execution.engine.locks import execution_of
from execution.models import ExecState
from execution.signals import waits_cancelled
from execution.states import SUBTASK_IN_FLIGHT
from execution.transitions import subtasks_redispatch, subtasks_transition
from plans.models import Plan, Subtask
from plans.models import SubtaskStatus as S


def dispatch(
    plan: Plan, subtasks: list[Subtask], *, batch: bool, reason: str, fields: dict[str, Any] | None = None
) -> None:
    """Queue subtasks under new task ids and send them after commit (as one chord if `batch`).

    Each run carries its attempt number (attempts + 1); only a queued subtask still at
    the previous attempt can start it. `fields` are written with the change to queued.
    While the plan is paused nothing is sent: the subtasks stay queued without a message
    (task id "") until the plan resumes.
    """
    execution = execution_of(plan)
    paused = execution is not None and execution.state == ExecState.PAUSED
    task_ids = {subtask.pk: "" if paused else str(uuid4()) for subtask in subtasks}
    to_queue = [subtask for subtask in subtasks if subtask.status != S.QUEUED]
    if to_queue:
        subtasks_transition(subtasks=to_queue, to=S.QUEUED, reason=reason, fields=fields, task_ids=task_ids)
    queued = [subtask for subtask in subtasks if subtask not in to_queue]
    if queued:
        subtasks_redispatch(subtasks=queued, task_ids=task_ids)
    if paused:
        return
    runs = [
        canvas.Run(
            subtask_id=subtask.pk,
            attempt=subtask.attempts + 1,
            task_id=subtask.task_id,
            timeout_s=subtask.timeout_s or settings.EXECUTION_DEFAULT_TIMEOUT_S,
        )
        for subtask in subtasks
    ]
    send = canvas.send_batch if batch else canvas.send_runs
    # A lost publish (broker down after commit) leaves queued subtasks the reconciler re-sends.
    transaction.on_commit(partial(send, plan.pk, runs), robust=True)


def stop_unfinished(plan: Plan, *, statuses: Sequence[str], reason: str, void_plan_approval: bool) -> None:
    """Cancel the plan's subtasks in these statuses, void their waits, revoke their messages."""
    targets = list(Subtask.objects.filter(plan=plan, status__in=statuses))
    before = {subtask.pk: subtask.status for subtask in targets}
    subtasks_transition(subtasks=targets, to=S.CANCELLED, reason=reason)
    waiting = [pk for pk, status in before.items() if status == S.WAITING_APPROVAL]
    if waiting or void_plan_approval:
        waits_cancelled.send(
            sender=Plan, plan_id=plan.pk, subtask_ids=None if void_plan_approval else waiting, reason=reason
        )
    task_ids = [subtask.task_id for subtask in targets if subtask.task_id and before[subtask.pk] in SUBTASK_IN_FLIGHT]
    if task_ids:
        transaction.on_commit(partial(canvas.revoke, task_ids), robust=True)


def skip_downstream(plan: Plan, subtask_ids: list[UUID], *, reason: str) -> None:
    """Skip these subtasks and every pending subtask downstream of them."""
    downstream = downstream_ids(subtask_ids)
    targets = Subtask.objects.filter(plan=plan, pk__in=[*subtask_ids, *downstream], status=S.PENDING)
    subtasks_transition(subtasks=list(targets), to=S.SKIPPED, reason=reason)


def downstream_ids(subtask_ids: list[UUID]) -> list[UUID]:
    """Return the subtasks that depend, directly or not, on any of these."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH RECURSIVE downstream(id) AS (
                SELECT subtask_id FROM plans_subtaskdependency WHERE depends_on_id = ANY(%s::uuid[])
                UNION
                SELECT link.subtask_id FROM plans_subtaskdependency link
                JOIN downstream ON link.depends_on_id = downstream.id
            )
            SELECT id FROM downstream
            """,
            [[str(pk) for pk in subtask_ids]],
        )
        return [row[0] for row in cursor.fetchall()]
