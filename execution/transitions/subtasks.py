"""Subtask status changes, one or many at a time, with the plan's counters and events in the same statement."""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import Case, CharField, Value, When
from django.utils import timezone

from execution.events import events_append
from execution.states import SUBTASK_SETTLED, SUBTASK_TRANSITIONS, allowed
from execution.transitions.errors import TransitionConflict, TransitionNotAllowed
from plans.models import Subtask, SubtaskStatus

SUBTASK_EVENTS: dict[str, str] = {
    SubtaskStatus.PENDING: "subtask.reset",
    SubtaskStatus.QUEUED: "subtask.queued",
    SubtaskStatus.RUNNING: "subtask.started",
    SubtaskStatus.WAITING_APPROVAL: "subtask.waiting_approval",
    SubtaskStatus.DONE: "subtask.completed",
    SubtaskStatus.FAILED: "subtask.failed",
    SubtaskStatus.SKIPPED: "subtask.skipped",
    SubtaskStatus.CANCELLED: "subtask.cancelled",
}


def subtask_transition(
    *,
    subtask: Subtask,
    to: str,
    reason: str = "",
    expect_attempts: int | None = None,
    fields: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    progress: bool = False,
) -> None:
    """Move a subtask from the status the caller read to `to`.

    `expect_attempts` fences the change on the attempt number too, so a message from an
    older attempt (a duplicate, or a worker that woke up late) cannot change anything.
    `fields` are written with the status; `details` go into the event only; `progress`
    adds a progress event. The caller holds the plan's lock.
    """
    current = subtask.status
    if not allowed(SUBTASK_TRANSITIONS, current, to):
        raise TransitionNotAllowed("subtask", current, to)
    values = {**_subtask_stamps(to), **(fields or {})}
    conditions: dict[str, Any] = {"pk": subtask.pk, "status": current}
    if expect_attempts is not None:
        conditions["attempts"] = expect_attempts
    with transaction.atomic(savepoint=False):
        changed = Subtask.objects.filter(**conditions).update(status=to, **values)
        if changed:
            for name, value in values.items():
                setattr(subtask, name, value)
            subtask.status = to
            events_append(
                plan_id=subtask.plan_id,
                events=[(SUBTASK_EVENTS[to], _subtask_payload(subtask, current, reason, details))],
                counts={current: -1, to: 1},
                progress=progress,
            )
    if not changed:
        latest = Subtask.objects.values_list("status", "attempts").get(pk=subtask.pk)
        subtask.status, subtask.attempts = latest
        raise TransitionConflict("subtask", subtask.status, to, expected=current)


def subtasks_transition(
    *,
    subtasks: Iterable[Subtask],
    to: str,
    reason: str = "",
    fields: dict[str, Any] | None = None,
    task_ids: Mapping[UUID, str] | None = None,
) -> list[Subtask]:
    """Move many subtasks of one plan to `to` at once; skip those the table does not allow.

    Return the subtasks that changed. `fields` are written to all of them; `task_ids`
    gives each its own task id (a dispatch). The caller holds the plan's lock, so the
    statuses it read are current; a mismatch means that rule was broken and raises a conflict.
    """
    by_status: dict[str, list[Subtask]] = defaultdict(list)
    for subtask in subtasks:
        if allowed(SUBTASK_TRANSITIONS, subtask.status, to):
            by_status[subtask.status].append(subtask)
    if not by_status:
        return []
    values = {**_subtask_stamps(to), **(fields or {}), "status": to}
    changed: list[Subtask] = []
    events: list[tuple[str, dict[str, Any]]] = []
    counts: dict[str, int] = defaultdict(int)
    with transaction.atomic(savepoint=False):
        for current, group in by_status.items():
            count = _update_group(group, current=current, values=values, task_ids=task_ids)
            if count != len(group):
                raise TransitionConflict("subtask", "changed", to, expected=current)
            for subtask in group:
                for name, value in values.items():
                    setattr(subtask, name, value)
                if task_ids is not None:
                    subtask.task_id = task_ids[subtask.pk]
                events.append((SUBTASK_EVENTS[to], _subtask_payload(subtask, current, reason, None)))
            counts[current] -= len(group)
            counts[to] += len(group)
            changed.extend(group)
        events_append(plan_id=changed[0].plan_id, events=events, counts=counts)
    return changed


def subtasks_redispatch(*, subtasks: Iterable[Subtask], task_ids: Mapping[UUID, str]) -> None:
    """Give queued subtasks new task ids (sent again, or held while paused): no status changes.

    The caller holds the plan's lock; a subtask no longer queued raises a conflict.
    """
    group = list(subtasks)
    now = timezone.now()
    values = {"queued_at": now, "updated_at": now}
    with transaction.atomic(savepoint=False):
        if _update_group(group, current=SubtaskStatus.QUEUED, values=values, task_ids=task_ids) != len(group):
            raise TransitionConflict("subtask", "changed", SubtaskStatus.QUEUED, expected=SubtaskStatus.QUEUED)
    for subtask in group:
        subtask.task_id, subtask.queued_at, subtask.updated_at = task_ids[subtask.pk], now, now


def subtask_record(*, subtask: Subtask, fields: dict[str, Any]) -> None:
    """Write fields of a subtask without changing its status (a decision noted while others pend).

    Fenced on the status and attempt the caller read; the caller holds the plan's lock.
    """
    with transaction.atomic(savepoint=False):
        changed = Subtask.objects.filter(pk=subtask.pk, status=subtask.status, attempts=subtask.attempts).update(
            **fields, updated_at=timezone.now()
        )
    if not changed:
        raise TransitionConflict("subtask", "changed", subtask.status, expected=subtask.status)
    for name, value in fields.items():
        setattr(subtask, name, value)


def _update_group(
    group: list[Subtask], *, current: str, values: dict[str, Any], task_ids: Mapping[UUID, str] | None
) -> int:
    """Update subtasks that are all in `current`, fenced on it; return how many changed."""
    ids = [subtask.pk for subtask in group]
    queryset = Subtask.objects.filter(pk__in=ids, status=current)
    if task_ids is None:
        return queryset.update(**values)
    # One statement gives each subtask its own task id.
    task_id = Case(*(When(pk=pk, then=Value(task_ids[pk])) for pk in ids), output_field=CharField())
    return queryset.update(**values, task_id=task_id)


def _subtask_stamps(to: str) -> dict[str, Any]:
    now = timezone.now()
    if to == SubtaskStatus.PENDING:
        return {
            "queued_at": None,
            "started_at": None,
            "completed_at": None,
            "lease_expires_at": None,
            "updated_at": now,
        }
    if to == SubtaskStatus.QUEUED:
        return {"queued_at": now, "lease_expires_at": None, "completed_at": None, "updated_at": now}
    if to == SubtaskStatus.RUNNING:
        return {"started_at": now, "updated_at": now}
    if to in SUBTASK_SETTLED:
        return {"completed_at": now, "lease_expires_at": None, "updated_at": now}
    return {"lease_expires_at": None, "updated_at": now}


def _subtask_payload(subtask: Subtask, previous: str, reason: str, details: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "subtask_id": subtask.pk,
        "subtask_key": subtask.key,
        "previous_status": previous,
        "status": subtask.status,
        "attempt": subtask.attempts,
        "reason": reason,
        **(details or {}),
    }
