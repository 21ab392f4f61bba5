"""The only writers of a status: plans, executions and subtasks, each change checked, made once, and recorded.

Each change is checked against the tables of states.py, made with a conditional UPDATE on
what the caller read (so of two concurrent changes exactly one wins; the other gets
TransitionConflict), and recorded in the same transaction: a StateTransition row for
executions, an event for everything, and the plan's subtask counters for subtasks. The
caller holds the plan's row lock.

A subtask's status has one writer, subtasks_transition (subtask_transition is its form for
one subtask). The two statements of a run's hot path, its start (queued -> running) and its
finish (running -> done), are generated at the end of this module from the same tables:
stamps, event types, payload keys, counters and the progress formula.
"""

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID

import psycopg
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, connection, transaction
from django.db.models import Case, CharField, Value, When
from django.utils import timezone

from common.errors import DomainError
from execution import canvas
from execution.events import (
    COUNTERS,
    NOTIFY_CHANNEL,
    PROGRESS_EVENT,
    counter,
    event_append,
    events_append,
    progress_sql,
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
        changed = Plan.objects.filter(pk=plan.pk, status=current).update(**fields)
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
    with transaction.atomic(savepoint=False):
        changed = ExecutionState.objects.filter(pk=execution.pk, state=current).update(
            state=to, updated_at=timezone.now()
        )
        if changed:
            record = StateTransition.objects.create(
                execution=execution,
                from_state=current,
                to_state=to,
                reason=reason,
                actor=actor,
                metadata=metadata or {},
            )
            event_append(
                plan_id=execution.plan_id,
                type="agent.execution.state_changed",
                payload={
                    "execution_id": execution.pk,
                    "previous_state": current,
                    "new_state": to,
                    "reason": reason,
                    "actor": actor,
                },
            )
    if not changed:
        execution.state = ExecutionState.objects.values_list("state", flat=True).get(pk=execution.pk)
        raise TransitionConflict("execution", execution.state, to, expected=current)
    execution.state = to
    return record


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
    values = {**_stamps(to, timezone.now()), **(fields or {}), "status": to}
    written: list[Subtask] = []
    events: list[tuple[str, dict[str, Any]]] = []
    counts: dict[str, int] = defaultdict(int)
    conflict: TransitionConflict | None = None
    with transaction.atomic(savepoint=False):
        for (current, attempts), group in groups.items():
            if _update(group, current=current, attempts=attempts, values=values, task_ids=task_ids) != len(group):
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
    """Update subtasks all in `current` at `attempts`, fenced on both; return how many changed."""
    ids = [subtask.pk for subtask in group]
    queryset = Subtask.objects.filter(pk__in=ids, status=current, attempts=attempts)
    if task_ids is None:
        return queryset.update(**values)
    # One statement gives each subtask its own task id (a CASE unless there is one: a resume).
    task_id = Case(*(When(pk=pk, then=Value(task_ids[pk])) for pk in ids), output_field=CharField())
    return queryset.update(**values, task_id=task_id if len(ids) > 1 else task_ids[ids[0]])


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


# --- The hot path: a run's start and finish, one statement each --------------------------------
# Each is its own transaction, so a run costs the engine two round trips. Each takes the plan's
# row lock first (a CTE with FOR UPDATE that the rest depends on, so the lock order stays plan,
# then its rows), changes the subtask fenced on (status, attempt), moves the plan's counters,
# appends its events and queues the NOTIFY. Rows read after the lock are current: UPDATE and
# FOR UPDATE see the latest versions, and the only rows read from the statement's snapshot are
# a dependency's result (final before this run was sent) and constants.

RUN_COLUMNS = (
    "id",
    "plan_id",
    "key",
    "description",
    "agent",
    "attempts",
    "retries",
    "max_retries",
    "lost_runs",
    "timeout_s",
    "task_id",
    "input",
    "tool_calls",
    "conversation",
    "usage",
    "agent_state",
)
PREPARE_THRESHOLD = 5
_JSONB_COLUMNS = ("plan_metadata", "input", "tool_calls", "conversation", "usage", "agent_state")


def _literal(word: str) -> str:
    """Return a status or an event type as an SQL string literal (they are plain words)."""
    assert re.fullmatch(r"[a-z_.]+", word), word
    return f"'{word}'"


def _set_sql(to: str) -> str:
    """Return the SET list of a change to `to`: the status and its stamps (SUBTASK_STAMPS), at %(now)s."""
    stamps = {**SUBTASK_STAMPS[to], "updated_at": NOW}
    return ", ".join(
        [f"status = {_literal(to)}", *(f"{name} = {'%(now)s' if v == NOW else 'NULL'}" for name, v in stamps.items())]
    )


def _counts_sql(previous: str, to: str) -> str:
    """Return the SET list moving one subtask from `previous` to `to` in the plan's counters (alias p)."""
    return f"{counter(previous)} = p.{counter(previous)} - 1, {counter(to)} = p.{counter(to)} + 1"


def _payload_sql(row: str, *, previous: str, to: str, extra: str = "") -> str:
    """Return subtask_payload in SQL, for the subtask row `row` (RETURNING its id, plan_id, key and attempts)."""
    columns = "".join(f", '{key}', {row}.{column}" for key, column in SUBTASK_PAYLOAD.items())
    return (
        f"jsonb_build_object('plan_id', {row}.plan_id{columns}, 'previous_status', {_literal(previous)}, "
        f"'status', {_literal(to)}, 'reason', ''{extra})"
    )


# Column names are constants; values go as parameters (hence the bandit exemption at its end).
START_SQL = f"""
WITH plan AS (
    SELECT p.id, p.status, p.goal, p.metadata, p.session_id FROM plans_plan p
    WHERE p.id = (SELECT plan_id FROM plans_subtask WHERE id = %(id)s)
    FOR UPDATE
), execution AS (
    SELECT e.state FROM execution_executionstate e WHERE e.plan_id = (SELECT id FROM plan) FOR UPDATE
), lease AS (
    -- A volatile function: the CTE runs once, and only for a plan in progress.
    SELECT pg_try_advisory_lock(hashtext(%(key)s), %(attempt)s) AS held
    FROM plan WHERE plan.status = {_literal(PlanStatus.IN_PROGRESS)}
), started AS (
    UPDATE plans_subtask s
    SET {_set_sql(S.RUNNING)}, attempts = %(attempt)s, worker = %(worker)s,
        lease_expires_at = %(now)s + make_interval(secs => (COALESCE(s.timeout_s, %(timeout)s) + %(extra)s)::float)
    FROM lease
    WHERE lease.held AND s.id = %(id)s AND s.status = {_literal(S.QUEUED)} AND s.attempts = %(attempt)s - 1
    RETURNING {", ".join(f"s.{column}" for column in RUN_COLUMNS)}
), context AS (
    -- The size of the dependencies' results, measured here: over the limit, none is read out.
    SELECT COALESCE(sum(octet_length(d.result::text)), 0) AS bytes
    FROM started JOIN plans_subtaskdependency link ON link.subtask_id = started.id
        JOIN plans_subtask d ON d.id = link.depends_on_id
), gathered AS (
    SELECT json_object_agg(
            d.key, json_build_object('description', d.description, 'result', d.result, 'agent', d.agent)
            ORDER BY d.batch_index, d.position) AS dependencies
    FROM started JOIN context ON context.bytes <= %(max_context)s
        JOIN plans_subtaskdependency link ON link.subtask_id = started.id
        JOIN plans_subtask d ON d.id = link.depends_on_id
), counter AS (
    UPDATE plans_plan p
    SET last_event_seq = p.last_event_seq + 1, {_counts_sql(S.QUEUED, S.RUNNING)}
    FROM started WHERE p.id = started.plan_id
    RETURNING p.last_event_seq, p.callback_url
), event AS (
    INSERT INTO execution_event (plan_id, seq, type, payload, created_at)
    SELECT started.plan_id, counter.last_event_seq, {_literal(SUBTASK_EVENTS[S.RUNNING])},
        {_payload_sql("started", previous=S.QUEUED, to=S.RUNNING)}, statement_timestamp()
    FROM started, counter
), notified AS (
    SELECT pg_notify('{NOTIFY_CHANNEL}', started.plan_id::text) FROM started, counter
)
SELECT plan.status AS plan_status, plan.goal AS plan_goal, plan.metadata AS plan_metadata,
       plan.session_id AS plan_session_id, execution.state AS execution_state, lease.held,
       counter.last_event_seq, counter.callback_url, (SELECT count(*) FROM notified) AS notified,
       context.bytes AS context_bytes, gathered.dependencies, started.*
FROM plan LEFT JOIN execution ON true LEFT JOIN lease ON true LEFT JOIN started ON true LEFT JOIN counter ON true
    LEFT JOIN context ON true LEFT JOIN gathered ON true
"""  # nosec

# Whether `done` done subtasks (out of p.subtask_count) pass a whole percent that one fewer did not.
_PASSES_A_PERCENT = "(100 * ({done})) / p.subtask_count > (100 * ({done} - 1)) / p.subtask_count"

# Column names are constants; values go as parameters (hence the bandit exemption at its end).
FINISH_SQL = f"""
WITH plan AS (
    SELECT p.id FROM plans_plan p WHERE p.id = %(plan)s FOR UPDATE
), finished AS (
    UPDATE plans_subtask s
    SET {_set_sql(S.DONE)}, result = %(result)s::jsonb, error = '', tool_calls = %(tool_calls)s::jsonb,
        conversation = COALESCE(%(conversation)s::jsonb, s.conversation), usage = COALESCE(%(usage)s::jsonb, s.usage),
        agent_state = COALESCE(%(agent_state)s::jsonb, s.agent_state)
    FROM plan
    WHERE s.id = %(id)s AND s.plan_id = plan.id AND s.status = {_literal(S.RUNNING)} AND s.attempts = %(attempt)s
    RETURNING s.id, s.plan_id, s.key, s.attempts
), counter AS (
    -- A progress event when the done percentage passes a whole number: every time in a plan
    -- of up to 100 subtasks, a hundred times in a larger one.
    UPDATE plans_plan p
    SET last_event_seq = p.last_event_seq + 1 + ({_PASSES_A_PERCENT.format(done=f"p.{counter(S.DONE)} + 1")})::int,
        {_counts_sql(S.RUNNING, S.DONE)}
    FROM finished WHERE p.id = finished.plan_id
    RETURNING p.last_event_seq, p.callback_url, p.subtask_count, {", ".join(f"p.{name}" for name in COUNTERS)},
        {_PASSES_A_PERCENT.format(done=f"p.{counter(S.DONE)}")} AS progressed
), event AS (
    INSERT INTO execution_event (plan_id, seq, type, payload, created_at)
    SELECT finished.plan_id, c.last_event_seq - c.progressed::int, {_literal(SUBTASK_EVENTS[S.DONE])},
        {_payload_sql("finished", previous=S.RUNNING, to=S.DONE, extra=", 'result', %(result)s::jsonb")},
        statement_timestamp()
    FROM finished, counter c
    UNION ALL
    SELECT finished.plan_id, c.last_event_seq, '{PROGRESS_EVENT}', {progress_sql("c", "finished.plan_id")},
        statement_timestamp()
    FROM finished, counter c WHERE c.progressed
), notified AS (
    SELECT pg_notify('{NOTIFY_CHANNEL}', finished.plan_id::text) FROM finished, counter
)
SELECT finished.id, counter.last_event_seq, counter.callback_url, counter.progressed,
       (SELECT count(*) FROM notified) AS notified,
       pg_advisory_unlock(hashtext(%(key)s), %(attempt)s) AS released
FROM plan LEFT JOIN finished ON true LEFT JOIN counter ON true
"""  # nosec


@dataclass(frozen=True)
class RunStart:
    """What the start statement found: the plan, and the subtask's row when the run started."""

    plan_status: str
    plan_goal: str
    plan_metadata: dict[str, Any]
    plan_session_id: str
    execution_state: str | None
    leased: bool
    row: dict[str, Any] | None
    dependencies: dict[str, Any]
    context_bytes: int = 0  # of the dependencies' results, as JSON text; over the limit, `dependencies` is empty


def run_start(
    *, subtask_id: UUID, attempt: int, worker: str, now: datetime, timeout_s: int, lease_extra_s: int, max_context: int
) -> RunStart | None:
    """Start attempt `attempt` of a queued subtask; None when its plan is gone.

    The run's lease is taken when the plan is in progress (`leased`); the subtask starts
    (`row`) only if it is queued at the attempt before. The caller releases a lease it got
    without a start. The dependencies' results are read only when they add up to at most
    `max_context` bytes (`context_bytes` says how many they are).
    """
    params = {
        "key": str(subtask_id),
        "id": subtask_id,
        "attempt": attempt,
        "worker": worker,
        "now": now,
        "timeout": timeout_s,
        "extra": lease_extra_s,
        "max_context": max_context,
    }
    found = _one(START_SQL, params)
    if found is None:
        return None
    for name in _JSONB_COLUMNS:
        # Django loads jsonb as text (its JSONField decodes it); raw statements get the text too.
        if isinstance(found.get(name), str):
            found[name] = json.loads(found[name])
    started = found["id"] is not None
    if started and found["callback_url"]:
        _webhooks(found["plan_id"], [found["last_event_seq"]])
    return RunStart(
        plan_status=found["plan_status"],
        plan_goal=found["plan_goal"],
        plan_metadata=found["plan_metadata"],
        plan_session_id=found["plan_session_id"],
        execution_state=found["execution_state"],
        leased=bool(found["held"]),
        row={name: found[name] for name in RUN_COLUMNS} if started else None,
        dependencies=found["dependencies"] or {},
        context_bytes=int(found["context_bytes"] or 0),
    )


def run_finish(
    *,
    subtask_id: UUID,
    plan_id: UUID,
    attempt: int,
    now: datetime,
    result: Any,
    tool_calls: list[Any],
    conversation: list[Any] | None,
    usage: dict[str, Any] | None,
    agent_state: dict[str, Any] | None = None,
) -> tuple[bool, bool]:
    """Mark a running subtask done with its result and release the run's lease.

    Return (finished, released): not finished when the run was stale, not released when
    the plan is gone (the caller then releases the lease itself).
    """
    params = {
        "id": subtask_id,
        "plan": plan_id,
        "key": str(subtask_id),
        "attempt": attempt,
        "now": now,
        "result": _json(result),
        "tool_calls": _json(tool_calls),
        "conversation": None if conversation is None else _json(conversation),
        "usage": None if usage is None else _json(usage),
        "agent_state": None if agent_state is None else _json(agent_state),
    }
    found = _one(FINISH_SQL, params)
    if found is None:
        return False, False
    if found["id"] is not None and found["callback_url"]:
        last = found["last_event_seq"]
        _webhooks(plan_id, [last - 1, last] if found["progressed"] else [last])
    return found["id"] is not None, bool(found["released"])


def _one(sql: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """Run a hot-path statement, prepared, in its own transaction; return its one row (or None).

    On a connection broken since its last use (execution/worker.py) it runs once more on a new one."""
    assert connection.get_autocommit(), "the hot path's statements are their own transactions"
    try:
        return _one_try(sql, params)
    except DatabaseError:
        if connection.connection is None or connection.is_usable():
            raise
        connection.close()
        return _one_try(sql, params)


def _one_try(sql: str, params: dict[str, Any]) -> dict[str, Any] | None:
    connection.close_if_health_check_failed()  # as Django's cursor() does, when the check is due
    connection.ensure_connection()
    # Prepared once per connection (Django turns preparing off for transaction-pooling proxies,
    # which the run's session-level lease rules out; its own cursors never prepare).
    raw = connection.connection
    if raw.prepare_threshold is None:
        raw.prepare_threshold = PREPARE_THRESHOLD
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        cursor.execute(sql, params, prepare=True)
        values = cursor.fetchone()
        names = [column.name for column in cursor.description or ()]
    return None if values is None else dict(zip(names, values, strict=True))


def _json(value: Any) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder)


def _webhooks(plan_id: UUID, seqs: list[int]) -> None:
    # Committed already: on_commit runs it at once.
    transaction.on_commit(partial(canvas.send_webhooks, plan_id, seqs), robust=True)
