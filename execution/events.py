"""The plan event log: append events in the caller's transaction and announce them on commit.

The same statement moves the plan's subtask counters (Plan.<status>_count), so the
counts change exactly when a status change is recorded, and a progress event can be
written from them without counting the plan's subtasks again.
"""

import contextlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from uuid import UUID

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction

from common.context import context_bound
from common.prepared import prepared_cursor
from execution import canvas
from execution.models import ExecutionState, StateTransition
from plans.models import SubtaskStatus as S

# Listeners (the live event stream, the command line) LISTEN on this channel; the payload is the plan id.
NOTIFY_CHANNEL = "plan_events"
PROGRESS_EVENT = "agent.execution.progress"

# What a progress object counts: each of its numbers and the subtask statuses it adds up.
PROGRESS_COUNTS: dict[str, tuple[str, ...]] = {
    "done": (S.DONE,),
    "failed": (S.FAILED,),
    "running": (S.RUNNING,),
    "pending": (S.PENDING, S.QUEUED),  # queued counts as pending
    "waiting_approval": (S.WAITING_APPROVAL,),
    "skipped": (S.SKIPPED,),
    "cancelled": (S.CANCELLED,),
}


def counter(status: str) -> str:
    """Return the column of Plan that counts its subtasks in `status`."""
    return f"{status}_count"


COUNTERS = tuple(counter(status) for status in S.values)


def percentage(done: Any, total: Any) -> Any:
    """Return 100 x done / total rounded half up to one decimal, in integer arithmetic (total above 0).

    Written once for both sides: given numbers it computes the percentage; given Sql
    expressions it writes the same formula for PostgreSQL, so the two agree to the bit.
    """
    return (2000 * done + total) // (2 * total) / 10


@dataclass(frozen=True)
class Sql:
    """An SQL expression that Python arithmetic extends (for percentage): integers divide with //, floats with /."""

    text: str

    def __str__(self) -> str:
        return self.text

    def __add__(self, other: object) -> "Sql":
        return Sql(f"({self} + {other})")

    def __rmul__(self, other: object) -> "Sql":
        return Sql(f"({other} * {self})")

    def __floordiv__(self, other: object) -> "Sql":
        # Integer division: PostgreSQL truncates, as // floors, alike for counts (never negative).
        return Sql(f"({self} / {other})")

    def __truediv__(self, other: object) -> "Sql":
        return Sql(f"({self}::float8 / {other})")


def progress_of(counts: Mapping[str, int], total: int) -> dict[str, Any]:
    """Return the API's progress object from per-status counts."""
    numbers = {key: sum(counts.get(status, 0) for status in statuses) for key, statuses in PROGRESS_COUNTS.items()}
    return {"total": total, **numbers, "percentage": percentage(numbers["done"], total) if total else 0.0}


def progress_sql(row: str, plan_id: str) -> str:
    """Return progress_of as SQL: a progress event's payload from a row of plan counters (`row` is its alias)."""
    numbers = {
        key: " + ".join(f"{row}.{counter(status)}" for status in statuses) for key, statuses in PROGRESS_COUNTS.items()
    }
    total = f"{row}.subtask_count"
    fields = {
        "plan_id": plan_id,
        "total": total,
        **numbers,
        "percentage": f"CASE WHEN {total} > 0 THEN {percentage(Sql(numbers['done']), Sql(total))} ELSE 0.0 END",
    }
    return "jsonb_build_object(" + ", ".join(f"'{key}', {value}" for key, value in fields.items()) + ")"


_COUNTERS = ", ".join(f"{name} = {name} + %({name})s" for name in COUNTERS)


@dataclass(frozen=True)
class ExecutionMove:
    """An execution's change of state and its StateTransition row, written with its plan's batched events.

    `values`: the StateTransition's columns by field name (`execution` the execution's id),
    ready for the database; `conflict` raises TransitionConflict, called when the change's
    fence (the state the caller read) held nothing.
    """

    values: Mapping[str, Any]
    conflict: Callable[[], None]


# The columns of an execution's StateTransition row, written here (batched) and by execution/transitions.py.
RECORDED_FIELDS = [f for f in StateTransition._meta.concrete_fields if not f.primary_key]
_MOVE_PARAMS = {f.name: f"%(move_{f.name})s::{f.db_type(connection)}" for f in RECORDED_FIELDS}


# One round trip: number the events from the plan's counter (its row stays locked until
# commit), move the subtask counters, insert the events (and, when asked, a progress event
# built from the counters just moved), queue the NOTIFY (PostgreSQL sends it at commit,
# once per plan and transaction) and, when a batch holds one, make an execution's change of
# state with its StateTransition row (fenced on the state its caller read: when the fence
# holds nothing, the statement writes nothing and returns no row). Column names and
# statuses are constants; values go as parameters (hence the bandit exemption at its end).
APPEND_SQL = f"""
WITH moved AS (
    UPDATE {ExecutionState._meta.db_table}
    SET state = {_MOVE_PARAMS["to_state"]}, updated_at = {_MOVE_PARAMS["created_at"]}
    WHERE id = {_MOVE_PARAMS["execution"]} AND state = {_MOVE_PARAMS["from_state"]}
    RETURNING id
), counter AS (
    UPDATE plans_plan SET last_event_seq = last_event_seq + %(count)s, {_COUNTERS}
    WHERE id = %(plan)s AND ({_MOVE_PARAMS["execution"]} IS NULL OR EXISTS (SELECT FROM moved))
    RETURNING last_event_seq, callback_url, subtask_count, {", ".join(COUNTERS)}
), listed AS (
    SELECT event.value ->> 0 AS type, event.value -> 1 AS payload, event.position
    FROM jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS event(value, position)
    UNION ALL
    SELECT %(progress_type)s::varchar, {progress_sql("c", "%(plan_text)s::text")}, %(count)s
    FROM counter c WHERE %(progress)s
), inserted AS (
    INSERT INTO execution_event (plan_id, seq, type, payload, created_at)
    SELECT %(plan)s, counter.last_event_seq - %(count)s + listed.position, listed.type, listed.payload,
           statement_timestamp()
    FROM counter, listed
), notified AS (
    SELECT pg_notify(%(channel)s, %(plan_text)s) FROM counter
), recorded AS (
    INSERT INTO {StateTransition._meta.db_table} ({", ".join(str(f.column) for f in RECORDED_FIELDS)})
    SELECT {", ".join("moved.id" if f.name == "execution" else _MOVE_PARAMS[f.name] for f in RECORDED_FIELDS)}
    FROM moved
)
SELECT last_event_seq, callback_url FROM counter, notified
"""  # nosec


def events_append(
    *,
    plan_id: UUID,
    events: Sequence[tuple[str, dict[str, Any]]],
    counts: Mapping[str, int] | None = None,
    progress: bool = False,
) -> list[int]:
    """Append events to a plan's log, numbered after its last one; return their numbers.

    Call inside the transaction that makes the change the events describe. Numbers are
    taken from the plan row, whose lock is held until commit, so a plan's events commit
    in sequence order and a reader that saw event N never misses an earlier one later.
    `counts` moves the plan's subtask counters ({status: change}); `progress` appends an
    agent.execution.progress event with the counts after the change. On commit, listeners
    hear a NOTIFY and a plan with a callback_url gets its webhooks.
    """
    if not events and not progress:
        return []
    batch = _batch.get()
    if batch is not None and batch.takes(plan_id):
        if not progress:
            batch.add(plan_id, events, counts)
            return []
        events_flush(plan_id)  # a progress event reads the counters: the plan's waiting events go first
    return _append(plan_id=plan_id, events=events, counts=counts, progress=progress)


def _append(
    *,
    plan_id: UUID,
    events: Sequence[tuple[str, dict[str, Any]]],
    counts: Mapping[str, int] | None,
    progress: bool,
    move: ExecutionMove | None = None,
) -> list[int]:
    total = len(events) + (1 if progress else 0)
    params: dict[str, Any] = {
        "count": total,
        "plan": plan_id,
        "plan_text": str(plan_id),
        "channel": NOTIFY_CHANNEL,
        # One JSON text of [type, payload] pairs: psycopg dumps a text at once, a list element by element.
        "events": json.dumps(
            [(kind, {"plan_id": str(plan_id), **payload}) for kind, payload in events], cls=DjangoJSONEncoder
        ),
        "progress": progress,
        "progress_type": PROGRESS_EVENT,
    }
    for status in S.values:
        params[counter(status)] = (counts or {}).get(status, 0)
    for f in RECORDED_FIELDS:
        params[f"move_{f.name}"] = move.values[f.name] if move is not None else None
    with prepared_cursor(connection) as cursor:
        cursor.execute(APPEND_SQL, params)
        row = cursor.fetchone()
    if row is None:
        if move is not None:
            move.conflict()  # its fence held nothing: nothing was written
        raise RuntimeError(f"Plan {plan_id} has no row to number its events from")
    last, callback_url = row
    seqs = list(range(last - total + 1, last + 1))
    if callback_url:
        transaction.on_commit(partial(canvas.send_webhooks, plan_id, seqs), robust=True)
    return seqs


def event_append(*, plan_id: UUID, type: str, payload: dict[str, Any]) -> int | None:
    """Append one event to a plan's log and return its number (None inside events_batched; see events_append)."""
    seqs = events_append(plan_id=plan_id, events=[(type, payload)])
    return seqs[0] if seqs else None


@dataclass
class _Events:
    """One plan's events and counter moves, waiting to be written."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    move: ExecutionMove | None = None


@dataclass
class _Batch:
    """Events waiting for the end of a block, by plan: one plan's (events_batched) or any's (events_batched_across)."""

    plan_id: UUID | None
    plans: dict[UUID, _Events] = field(default_factory=dict)

    def takes(self, plan_id: UUID) -> bool:
        return self.plan_id is None or self.plan_id == plan_id

    def add(
        self, plan_id: UUID, events: Sequence[tuple[str, dict[str, Any]]], counts: Mapping[str, int] | None
    ) -> None:
        waiting = self.plans.setdefault(plan_id, _Events())
        waiting.events.extend(events)
        waiting.counts.update(counts or {})


_batch: ContextVar[_Batch | None] = ContextVar("events_batch", default=None)


@contextlib.contextmanager
def events_batched(*, plan_id: UUID) -> Iterator[None]:
    """Write the events a block appends to this plan in one statement, when the block ends.

    For a change made of several steps (a decision: the approval, the subtask, the
    execution) inside one transaction that holds the plan's lock. The counters move at
    the end too, so nothing inside may read them; a progress event writes the plan's
    waiting events, then itself, at once. Inside a batch that takes the plan's events
    (of the same plan, or events_batched_across), the block's events join that batch.
    """
    outer = _batch.get()
    if outer is not None and outer.takes(plan_id):
        yield
        return
    with _batched(_Batch(plan_id=plan_id)):
        yield


@contextlib.contextmanager
def events_batched_across() -> Iterator[None]:
    """Write the events a block appends to any plan in one statement for them all, when the block ends.

    As events_batched, for changes to many plans in one transaction that holds all their
    locks (many decisions in one request). Before reading a plan's counters again inside
    the block, call events_flush(plan_id); events_unbatched() writes a block's events as they come.
    """
    with _batched(_Batch(plan_id=None)):
        yield


@contextlib.contextmanager
def _batched(batch: _Batch) -> Iterator[None]:
    with context_bound(_batch, batch):
        yield
    if len(batch.plans) == 1:
        ((plan_id, waiting),) = batch.plans.items()
        _append(plan_id=plan_id, events=waiting.events, counts=waiting.counts, progress=False, move=waiting.move)
    elif batch.plans:
        _append_across(batch.plans)


def execution_move_batched(plan_id: UUID, move: ExecutionMove) -> bool:
    """Hold an execution's change of state for the statement that writes its plan's batched events.

    Only in a batch of this plan's events (events_batched): return False elsewhere, for
    the caller to make the change at once. A second change of the same batch writes the
    first (with the events so far) before it is held in turn, so changes are made in order.
    """
    batch = _batch.get()
    if batch is None or batch.plan_id != plan_id:
        return False
    waiting = batch.plans.get(plan_id)
    if waiting is not None and waiting.move is not None:
        events_flush(plan_id)
    batch.plans.setdefault(plan_id, _Events()).move = move
    return True


def events_flush(plan_id: UUID) -> None:
    """Write the plan's events that wait in the current batch now (nothing when none wait)."""
    batch = _batch.get()
    waiting = batch.plans.pop(plan_id, None) if batch is not None else None
    if waiting is not None:
        _append(plan_id=plan_id, events=waiting.events, counts=waiting.counts, progress=False, move=waiting.move)


@contextlib.contextmanager
def events_unbatched() -> Iterator[None]:
    """Write the events a block appends as they come, inside a batch (whose waiting events stay waiting)."""
    with context_bound(_batch, None):
        yield


# APPEND_SQL for many plans at once (their rows locked by the caller's transaction): one
# counter row per plan, each event numbered after its own plan's last one.
_MOVES = ", ".join(f"{name} = p.{name} + m.{name}" for name in COUNTERS)
APPEND_ACROSS_SQL = f"""
WITH moves AS (
    SELECT * FROM jsonb_to_recordset(%(moves)s::jsonb)
        AS m(plan_id uuid, added int, {", ".join(f"{name} int" for name in COUNTERS)})
), counter AS (
    UPDATE plans_plan p SET last_event_seq = p.last_event_seq + m.added, {_MOVES}
    FROM moves m WHERE p.id = m.plan_id
    RETURNING p.id, p.last_event_seq, p.callback_url, m.added
), inserted AS (
    INSERT INTO execution_event (plan_id, seq, type, payload, created_at)
    SELECT c.id, c.last_event_seq - c.added + (event.value ->> 1)::int, event.value ->> 2, event.value -> 3,
           statement_timestamp()
    FROM jsonb_array_elements(%(events)s::jsonb) AS event(value)
    JOIN counter c ON c.id = (event.value ->> 0)::uuid
), notified AS (
    SELECT c.id, pg_notify(%(channel)s, c.id::text) FROM counter c
)
SELECT c.id, c.last_event_seq, c.callback_url FROM counter c JOIN notified USING (id)
"""  # nosec


def _append_across(plans: Mapping[UUID, _Events]) -> None:
    """Write many plans' waiting events in one statement (see APPEND_ACROSS_SQL)."""
    # Two JSON texts (each plan's counter moves; every event as [plan, position, type, payload]):
    # psycopg dumps a text at once, a list element by element.
    moves = [
        {"plan_id": str(plan_id), "added": len(waiting.events)}
        | {counter(status): waiting.counts.get(status, 0) for status in S.values}
        for plan_id, waiting in plans.items()
    ]
    events = [
        (str(plan_id), position, kind, {"plan_id": str(plan_id), **payload})
        for plan_id, waiting in plans.items()
        for position, (kind, payload) in enumerate(waiting.events, start=1)
    ]
    params = {
        "moves": json.dumps(moves),
        "events": json.dumps(events, cls=DjangoJSONEncoder),
        "channel": NOTIFY_CHANNEL,
    }
    with connection.cursor() as cursor:
        cursor.execute(APPEND_ACROSS_SQL, params)
        rows = cursor.fetchall()
    for plan_id, last, callback_url in rows:
        if callback_url:
            total = len(plans[plan_id].events)
            seqs = list(range(last - total + 1, last + 1))
            transaction.on_commit(partial(canvas.send_webhooks, plan_id, seqs), robust=True)
