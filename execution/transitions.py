"""The only writers of a status: plans, executions and subtasks, each change checked, made once, and recorded.

Each change is checked against the tables of states.py, made with a conditional UPDATE on
what the caller read (so of two concurrent changes exactly one wins; the other gets
TransitionConflict), and recorded in the same transaction: a StateTransition row for
executions, an event for everything, and the plan's subtask counters for subtasks. The
caller holds the plan's row lock.

A subtask's status has one writer, subtasks_transition (subtask_transition is its form for
one subtask), but for the two statements of a run's hot path, its start (queued -> running)
and its finish (running -> done), which execution/run_statements.py generates from this
module's tables: stamps, event types and payload keys.
"""

import contextlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, partial
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.utils import timezone

from common.context import context_bound
from common.errors import DomainError
from common.prepared import prepared_cursor
from execution.events import (
    RECORDED_FIELDS,
    ExecutionMove,
    event_append,
    events_append,
    execution_move_batched,
)
from execution.models import ExecutionState, StateTransition
from execution.states import (
    EXECUTION_TRANSITIONS,
    PLAN_FINISHED,
    PLAN_TRANSITIONS,
    SUBTASK_SETTLED,
    SUBTASK_TRANSITIONS,
    allowed,
)
from plans.models import Plan, PlanStatus, Subtask
from plans.models import SubtaskStatus as S

# --- The errors of a change -----------------------------------------------------------------


class TransitionNotAllowed(DomainError):
    """The status table does not allow this change from the current status."""

    code = "invalid_state"
    http_status = 409

    def __init__(self, subject: str, current: str, target: str, message: str = "") -> None:
        self.subject = subject
        self.current_status = current
        self.target = target
        super().__init__(
            message or f"The {subject} is {current}; it cannot become {target}.", details={"current_status": current}
        )


class TransitionConflict(TransitionNotAllowed):
    """The status changed after the caller read it: a concurrent change won."""

    def __init__(self, subject: str, current: str, target: str, expected: str) -> None:
        super().__init__(
            subject,
            current,
            target,
            f"The {subject} changed from {expected} to {current} meanwhile; it was not made {target}.",
        )
        self.expected = expected


# --- Plans and executions -------------------------------------------------------------------

PLAN_EVENTS: dict[str, str] = {
    PlanStatus.APPROVED: "plan.approved",
    PlanStatus.IN_PROGRESS: "plan.started",
    PlanStatus.COMPLETED: "plan.completed",
    PlanStatus.FAILED: "plan.failed",
    PlanStatus.CANCELLED: "plan.cancelled",
}


def plan_transition(*, plan: Plan, to: str, reason: str = "", actor: str = "system", event: str = "") -> None:
    """Move a plan from the status the caller read to `to`, stamping its timestamps."""
    current = plan.status
    if not allowed(PLAN_TRANSITIONS, current, to):
        raise TransitionNotAllowed("plan", current, to)
    now = timezone.now()
    fields: dict[str, Any] = {"status": to, "updated_at": now}
    if to == PlanStatus.APPROVED:
        fields["approved_at"] = now
    elif to == PlanStatus.IN_PROGRESS:
        fields["started_at"] = plan.started_at or now
        fields["completed_at"] = None
    elif to in PLAN_FINISHED:
        fields["completed_at"] = now
    with transaction.atomic(savepoint=False):
        with prepared_cursor(connection) as cursor:
            cursor.execute(_plan_move_sql(tuple(fields)), [*_plan_values(fields), plan.pk, current])
            changed = cursor.rowcount
        if changed:
            event_append(
                plan_id=plan.pk,
                type=event or PLAN_EVENTS[to],
                payload={"previous_status": current, "status": to, "reason": reason, "actor": actor},
            )
    if not changed:
        plan.status = Plan.objects.values_list("status", flat=True).get(pk=plan.pk)
        raise TransitionConflict("plan", plan.status, to, expected=current)
    for name, value in fields.items():
        setattr(plan, name, value)


_PLAN_FIELDS = {field.name: field for field in Plan._meta.concrete_fields}


@cache
def _plan_move_sql(names: tuple[str, ...]) -> str:
    """The plan's change, fenced on the status the caller read: a statement per set of fields, prepared once."""
    columns = ", ".join(f"{_PLAN_FIELDS[name].column} = %s" for name in names)
    return f"UPDATE {Plan._meta.db_table} SET {columns} WHERE id = %s AND status = %s"  # nosec B608: the model's names


def _plan_values(fields: Mapping[str, Any]) -> list[Any]:
    return [_PLAN_FIELDS[name].get_db_prep_save(value, connection) for name, value in fields.items()]


def execution_transition(
    *,
    execution: ExecutionState,
    to: str,
    reason: str = "",
    actor: str = "system",
    metadata: dict[str, Any] | None = None,
) -> StateTransition:
    """Move an execution from the state the caller read to `to`, and record the transition."""
    current = execution.state
    if not allowed(EXECUTION_TRANSITIONS, current, to):
        raise TransitionNotAllowed("execution", current, to)
    held = _held.get()
    if held is not None:
        record = StateTransition(
            execution=execution, from_state=current, to_state=to, reason=reason, actor=actor, metadata=metadata or {}
        )
        held.executions.append((execution, current, to))
        held.records.append(record)
        _execution_event(execution, current=current, to=to, reason=reason, actor=actor)
        execution.state = to
        return record
    record = StateTransition(
        execution=execution,
        from_state=current,
        to_state=to,
        reason=reason,
        actor=actor,
        metadata=metadata or {},
        created_at=timezone.now(),
    )
    # In a batch of the plan's events (a decision, a plan's end), made by the statement that writes them.
    if execution_move_batched(
        execution.plan_id,
        ExecutionMove(values=_move_params(record), conflict=partial(_execution_conflict, execution, current, to)),
    ):
        _execution_event(execution, current=current, to=to, reason=reason, actor=actor)
        execution.state = to
        return record
    with transaction.atomic(savepoint=False):
        with prepared_cursor(connection) as cursor:
            cursor.execute(EXECUTION_MOVE_SQL, _move_params(record))
            moved = cursor.fetchone()
        if moved is not None:
            record.pk = moved[0]
            record._state.adding, record._state.db = False, connection.alias
            _execution_event(execution, current=current, to=to, reason=reason, actor=actor)
    if moved is None:
        _execution_conflict(execution, current, to)
    execution.state = to
    return record


def _execution_conflict(execution: ExecutionState, current: str, to: str) -> None:
    """Raise TransitionConflict for a change whose fence held nothing, with the state the execution is in now."""
    execution.state = ExecutionState.objects.values_list("state", flat=True).get(pk=execution.pk)
    raise TransitionConflict("execution", execution.state, to, expected=current)


# The change, fenced on the state the caller read, and its StateTransition row in one statement:
# no row is inserted when the fence holds nothing. Names come from the models, values go as parameters.
EXECUTION_MOVE_SQL = f"""
WITH moved AS (
    UPDATE {ExecutionState._meta.db_table} SET state = %(to_state)s, updated_at = %(created_at)s
    WHERE id = %(execution)s AND state = %(from_state)s
    RETURNING id
)
INSERT INTO {StateTransition._meta.db_table} ({", ".join(str(f.column) for f in RECORDED_FIELDS)})
SELECT {", ".join("moved.id" if f.name == "execution" else f"%({f.name})s" for f in RECORDED_FIELDS)} FROM moved
RETURNING id
"""  # nosec B608: the models' names only


def _move_params(record: StateTransition) -> dict[str, Any]:
    params = {f.name: f.get_db_prep_save(getattr(record, f.attname), connection) for f in RECORDED_FIELDS}
    params["execution"] = record.execution_id
    return params


EXECUTION_EVENT = "agent.execution.state_changed"


def _execution_event(execution: ExecutionState, *, current: str, to: str, reason: str, actor: str) -> None:
    event_append(
        plan_id=execution.plan_id,
        type=EXECUTION_EVENT,
        payload={
            "execution_id": execution.pk,
            "previous_state": current,
            "new_state": to,
            "reason": reason,
            "actor": actor,
        },
    )


# --- Subtasks: what a change writes and says, for the Python path and the hot path alike -------

SUBTASK_EVENTS: dict[str, str] = {
    S.PENDING: "subtask.reset",
    S.QUEUED: "subtask.queued",
    S.RUNNING: "subtask.started",
    S.WAITING_APPROVAL: "subtask.waiting_approval",
    S.DONE: "subtask.completed",
    S.FAILED: "subtask.failed",
    S.SKIPPED: "subtask.skipped",
    S.CANCELLED: "subtask.cancelled",
}

NOW = "now"
# What a change to each status stamps (NOW: the time of the change; None clears it), with updated_at.
SUBTASK_STAMPS: dict[str, dict[str, str | None]] = {
    S.PENDING: {"queued_at": None, "started_at": None, "completed_at": None, "lease_expires_at": None},
    S.QUEUED: {"queued_at": NOW, "lease_expires_at": None, "completed_at": None},
    S.RUNNING: {"started_at": NOW},
    S.WAITING_APPROVAL: {"lease_expires_at": None},
    **{status: {"completed_at": NOW, "lease_expires_at": None} for status in SUBTASK_SETTLED},
}

# Every subtask event's payload: these keys, each read from the subtask's column, with the
# previous and new status and the reason (events.py adds plan_id to every event).
SUBTASK_PAYLOAD = {"subtask_id": "id", "subtask_key": "key", "attempt": "attempts"}


def subtask_payload(subtask: Subtask, *, previous: str, reason: str, details: dict[str, Any] | None) -> dict[str, Any]:
    """Return the payload of the event of a subtask's change from `previous` to its status now."""
    return {
        **{key: getattr(subtask, column) for key, column in SUBTASK_PAYLOAD.items()},
        "previous_status": previous,
        "status": subtask.status,
        "reason": reason,
        **(details or {}),
    }


def subtask_transition(
    *,
    subtask: Subtask,
    to: str,
    reason: str = "",
    fields: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    progress: bool = False,
) -> None:
    """Move one subtask from the status and attempt the caller read to `to` (see subtasks_transition).

    Raise TransitionNotAllowed when the table does not allow it, TransitionConflict (with
    the subtask's status and attempt read again) when it changed meanwhile: a message of an
    older attempt, a duplicate or a worker that woke up late, changes nothing.
    """
    if subtask.status != to and not allowed(SUBTASK_TRANSITIONS, subtask.status, to):
        raise TransitionNotAllowed("subtask", subtask.status, to)
    subtasks_transition(subtasks=[subtask], to=to, reason=reason, fields=fields, details=details, progress=progress)


def subtasks_transition(
    *,
    subtasks: Iterable[Subtask],
    to: str,
    reason: str = "",
    fields: dict[str, Any] | None = None,
    task_ids: Mapping[UUID, str] | None = None,
    details: dict[str, Any] | None = None,
    progress: bool = False,
) -> list[Subtask]:
    """Move subtasks of one plan to `to`, each fenced on the status and attempt the caller read; return those written.

    Every change of a subtask's status but the hot path's two statements is made here. A
    subtask the table does not allow to become `to` is left as it is; one already in `to`
    gets the fields and task id only, with no event (sent again while queued, or a decision
    noted while its sibling calls still wait). `fields` are written to all, `task_ids`
    gives each its own task id (a dispatch), `details` go into the events, `progress` adds
    a progress event. The caller holds the plan's lock, so what it read is current.
    """
    groups: dict[tuple[str, int], list[Subtask]] = defaultdict(list)
    for subtask in subtasks:
        if subtask.status == to or allowed(SUBTASK_TRANSITIONS, subtask.status, to):
            groups[subtask.status, subtask.attempts].append(subtask)
    if not groups:
        return []
    held = _held.get()
    values = {**_stamps(to, held.now if held is not None else timezone.now()), **(fields or {}), "status": to}
    written: list[Subtask] = []
    events: list[tuple[str, dict[str, Any]]] = []
    counts: dict[str, int] = defaultdict(int)
    conflict: TransitionConflict | None = None
    with transaction.atomic(savepoint=False):
        for (current, attempts), group in groups.items():
            if held is not None:
                held.subtasks.extend((subtask, current, attempts, values, task_ids) for subtask in group)
            elif _update(group, current=current, attempts=attempts, values=values, task_ids=task_ids) != len(group):
                conflict = _conflict(group, current=current, to=to)
                if written:
                    raise conflict  # half made: the caller's transaction must not commit it
                break
            for subtask in group:
                for name, value in values.items():
                    setattr(subtask, name, value)
                if task_ids is not None:
                    subtask.task_id = task_ids[subtask.pk]
                if current != to:
                    payload = subtask_payload(subtask, previous=current, reason=reason, details=details)
                    events.append((SUBTASK_EVENTS[to], payload))
            if current != to:
                counts[current] -= len(group)
                counts[to] += len(group)
            written.extend(group)
        if conflict is None and events:
            events_append(plan_id=written[0].plan_id, events=events, counts=counts, progress=progress)
    if conflict is not None:
        # Nothing was written, so the caller's transaction stays usable (a stale run is told so and goes on).
        raise conflict
    return written


def _stamps(to: str, now: datetime) -> dict[str, Any]:
    return {**{name: now if value == NOW else None for name, value in SUBTASK_STAMPS[to].items()}, "updated_at": now}


def _update(
    group: list[Subtask], *, current: str, attempts: int, values: dict[str, Any], task_ids: Mapping[UUID, str] | None
) -> int:
    """Update subtasks all in `current` at `attempts`, fenced on both, in one statement; return how many changed.

    Each with its own task id, if given (a dispatch). The statement is _update_each's: made
    without the ORM, which took as long to compile an UPDATE as PostgreSQL to run it.
    """
    rows = [(subtask, _row(subtask, values, task_ids)) for subtask in group]
    return _update_each(rows, names=tuple(rows[0][1]), current=current, attempts=attempts)


def _row(subtask: Subtask, values: dict[str, Any], task_ids: Mapping[UUID, str] | None) -> dict[str, Any]:
    """What a subtask's change writes: the values, and its own task id if given."""
    return values if task_ids is None else {**values, "task_id": task_ids[subtask.pk]}


def _conflict(group: list[Subtask], *, current: str, to: str) -> TransitionConflict:
    """Read again what changed under the caller and return the conflict to raise."""
    latest = {
        pk: (status, attempts)
        for pk, status, attempts in Subtask.objects.filter(pk__in=[subtask.pk for subtask in group]).values_list(
            "pk", "status", "attempts"
        )
    }
    for subtask in group:
        subtask.status, subtask.attempts = latest[subtask.pk]
    moved = next((subtask for subtask in group if subtask.status != current), group[0])
    return TransitionConflict("subtask", moved.status, to, expected=current)


# --- Changes held for the end of a block --------------------------------------------------------


@dataclass
class _Held:
    # Each subtask as the caller read it (its status and attempt), what it becomes, and its task id.
    subtasks: list[tuple[Subtask, str, int, dict[str, Any], Mapping[UUID, str] | None]] = field(default_factory=list)
    executions: list[tuple[ExecutionState, str, str]] = field(default_factory=list)
    records: list[StateTransition] = field(default_factory=list)
    now: datetime = field(default_factory=timezone.now)  # the time of the block's changes, as of its transaction


_held: ContextVar[_Held | None] = ContextVar("transitions_held", default=None)


@contextlib.contextmanager
def transitions_held() -> Iterator[None]:
    """Write the subtask and execution changes a block makes when it ends, a statement for each kind of change.

    For many changes in one transaction that holds all their plans' locks (many decisions in
    one request): each change is checked and recorded as it is made (events, in-memory
    objects), and written fenced as ever when the block ends, where a change that no longer
    applies raises TransitionConflict and the transaction must not commit. Before reading
    a plan's subtasks or execution again inside the block, call transitions_flush();
    transitions_unheld() makes a block's changes as they come.
    """
    held = _Held()
    with context_bound(_held, held):
        yield
    _write_held(held)


def transitions_flush() -> None:
    """Write the changes held so far (see transitions_held)."""
    held = _held.get()
    if held is not None:
        _write_held(held)
        held.subtasks.clear()
        held.executions.clear()
        held.records.clear()


@contextlib.contextmanager
def transitions_unheld() -> Iterator[None]:
    """Make the changes of a block as they come, inside transitions_held (what it holds stays held)."""
    with context_bound(_held, None):
        yield


def _write_held(held: _Held) -> None:
    alike: dict[tuple[str, int, tuple[str, ...]], list[tuple[Subtask, dict[str, Any]]]] = defaultdict(list)
    for subtask, current, attempts, values, task_ids in held.subtasks:
        row = _row(subtask, values, task_ids)
        alike[current, attempts, tuple(row)].append((subtask, row))
    for (current, attempts, names), rows in alike.items():
        if _update_each(rows, names=names, current=current, attempts=attempts) != len(rows):
            raise _conflict([subtask for subtask, _ in rows], current=current, to=rows[0][1]["status"])
    moves: dict[tuple[str, str], list[ExecutionState]] = defaultdict(list)
    for execution, current, to in held.executions:
        moves[current, to].append(execution)
    for (current, to), executions in moves.items():
        ids = [execution.pk for execution in executions]
        changed = ExecutionState.objects.filter(pk__in=ids, state=current).update(state=to, updated_at=held.now)
        if changed != len(ids):
            latest = ExecutionState.objects.filter(pk__in=ids).exclude(state=current).values_list("state", flat=True)
            raise TransitionConflict("execution", latest.first() or current, to, expected=current)
    StateTransition.objects.bulk_create(held.records)


def _update_each(
    rows: list[tuple[Subtask, dict[str, Any]]], *, names: tuple[str, ...], current: str, attempts: int
) -> int:
    """Give each subtask its own values in one statement, fenced as _update; return how many changed.

    UPDATE ... FROM (VALUES ...): a column with the same value for all is set once, the
    others come from the list, each value cast to its column's type. Column names come
    from the model, values go as parameters.
    """
    columns = {field.name: field for field in Subtask._meta.concrete_fields}
    fields = {name: columns[name] for name in names}  # a name that is no column fails here, not silently
    same = [name for name in names if all(row[name] == rows[0][1][name] for _, row in rows[1:])]
    each = [fields[name] for name in names if name not in same]
    sets = [f"{fields[name].column} = %s" for name in same] + [f"{f.column} = v.{f.column}" for f in each]
    params: list[Any] = [fields[name].get_db_prep_save(rows[0][1][name], connection) for name in same]
    casts = "(" + ", ".join(["%s::uuid", *(f"%s::{f.db_type(connection)}" for f in each)]) + ")"
    for subtask, row in rows:
        params += [subtask.pk, *(f.get_db_prep_save(row[f.name], connection) for f in each)]
    listed = ", ".join(["id", *(str(f.column) for f in each)])
    sql = (
        f"UPDATE {Subtask._meta.db_table} AS s SET {', '.join(sets)} "  # nosec B608: the model's names only
        f"FROM (VALUES {', '.join([casts] * len(rows))}) AS v({listed}) "
        "WHERE s.id = v.id AND s.status = %s AND s.attempts = %s"
    )
    # One subtask's change is prepared (a decision's, a retry's); a statement of many rows, whose text
    # varies with their number, is not (nor bound by the server, which takes 65,535 parameters at most).
    with prepared_cursor(connection, prepare=len(rows) == 1) as cursor:
        cursor.execute(sql, [*params, current, attempts])
        return cursor.rowcount
