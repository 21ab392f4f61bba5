"""The hot path: a run's start (queued -> running) and finish (running -> done), one statement each.

They are generated from the tables of execution/transitions.py (stamps, event types,
payload keys) and execution/events.py (counters, the progress formula), so they write what
subtasks_transition would.
"""

import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID

from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, connection, transaction

from common.prepared import compact, prepared_cursor
from execution import canvas
from execution.events import COUNTERS, NOTIFY_CHANNEL, PROGRESS_EVENT, counter, progress_sql
from execution.models import ExecState, StateTransition
from execution.states import EXECUTION_RESUMING
from execution.transitions import EXECUTION_EVENT, NOW, SUBTASK_EVENTS, SUBTASK_PAYLOAD, SUBTASK_STAMPS
from plans.models import PlanStatus
from plans.models import SubtaskStatus as S

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


# The reason of that change, "subtask 'key' running": a key holds no quote (plans/shape.py KEY_PATTERN).
_RUNNING_REASON = "'subtask ''' || started.key || ''' running'"

# Column names are constants; values go as parameters (hence the bandit exemption at its end).
START_SQL = compact(f"""
WITH plan AS (
    SELECT p.id, p.status, p.goal, p.metadata, p.session_id FROM plans_plan p
    WHERE p.id = (SELECT plan_id FROM plans_subtask WHERE id = %(id)s)
    FOR UPDATE
), execution AS (
    SELECT e.id, e.state FROM execution_executionstate e WHERE e.plan_id = (SELECT id FROM plan) FOR UPDATE
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
), resumed AS (
    -- A run started after a decision shows its execution running again, as execution_transition
    -- would in a transaction of its own: the change, its StateTransition row and its event.
    UPDATE execution_executionstate e SET state = {_literal(ExecState.RUNNING)}, updated_at = %(now)s
    FROM started, execution
    WHERE e.id = execution.id AND execution.state IN ({", ".join(map(_literal, sorted(EXECUTION_RESUMING)))})
    RETURNING e.id, execution.state AS previous, {_RUNNING_REASON} AS reason
), transition AS (
    INSERT INTO {StateTransition._meta.db_table}
        (execution_id, from_state, to_state, reason, actor, metadata, created_at)
    SELECT resumed.id, resumed.previous, {_literal(ExecState.RUNNING)}, resumed.reason, 'system', '{{}}'::jsonb, %(now)s
    FROM resumed
), counter AS (
    UPDATE plans_plan p
    SET last_event_seq = p.last_event_seq + 1 + moved.resumed, {_counts_sql(S.QUEUED, S.RUNNING)}
    FROM started, (SELECT count(*) AS resumed FROM resumed) moved WHERE p.id = started.plan_id
    RETURNING p.last_event_seq, p.callback_url, moved.resumed
), event AS (
    INSERT INTO execution_event (plan_id, seq, type, payload, created_at)
    SELECT started.plan_id, counter.last_event_seq - counter.resumed, {_literal(SUBTASK_EVENTS[S.RUNNING])},
        {_payload_sql("started", previous=S.QUEUED, to=S.RUNNING)}, statement_timestamp()
    FROM started, counter
    UNION ALL
    SELECT started.plan_id, counter.last_event_seq, {_literal(EXECUTION_EVENT)},
        jsonb_build_object('execution_id', resumed.id, 'previous_state', resumed.previous,
            'new_state', {_literal(ExecState.RUNNING)}, 'reason', resumed.reason, 'actor', 'system'),
        statement_timestamp()
    FROM started, counter, resumed
), notified AS (
    SELECT pg_notify('{NOTIFY_CHANNEL}', started.plan_id::text) FROM started, counter
)
SELECT plan.status AS plan_status, plan.goal AS plan_goal, plan.metadata AS plan_metadata,
       plan.session_id AS plan_session_id, lease.held, counter.last_event_seq, counter.callback_url,
       counter.resumed, (SELECT count(*) FROM notified) AS notified,
       context.bytes AS context_bytes, gathered.dependencies, started.*
FROM plan LEFT JOIN execution ON true LEFT JOIN lease ON true LEFT JOIN started ON true LEFT JOIN counter ON true
    LEFT JOIN context ON true LEFT JOIN gathered ON true
""")  # nosec

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
    leased: bool
    row: dict[str, Any] | None
    dependencies: dict[str, Any]
    context_bytes: int = 0  # of the dependencies' results, as JSON text; over the limit, `dependencies` is empty


def run_start(
    *, subtask_id: UUID, attempt: int, worker: str, now: datetime, timeout_s: int, lease_extra_s: int, max_context: int
) -> RunStart | None:
    """Start attempt `attempt` of a queued subtask; None when its plan is gone.

    The run's lease is taken when the plan is in progress (`leased`); the subtask starts
    (`row`) only if it is queued at the attempt before, and its execution, if a decision left
    it resumed or waiting for approval, runs again. The caller releases a lease it got
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
        last = found["last_event_seq"]
        _webhooks(found["plan_id"], list(range(last - found["resumed"], last + 1)))
    return RunStart(
        plan_status=found["plan_status"],
        plan_goal=found["plan_goal"],
        plan_metadata=found["plan_metadata"],
        plan_session_id=found["plan_session_id"],
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
    # Prepared once per connection (common/prepared.py).
    with prepared_cursor(connection) as cursor:
        cursor.execute(sql, params)
        values = cursor.fetchone()
        names = [column.name for column in cursor.description or ()]
    return None if values is None else dict(zip(names, values, strict=True))


def _json(value: Any) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder)


def _webhooks(plan_id: UUID, seqs: list[int]) -> None:
    # Committed already: on_commit runs it at once.
    transaction.on_commit(partial(canvas.send_webhooks, plan_id, seqs), robust=True)
