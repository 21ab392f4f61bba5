"""Running one attempt of a subtask: start it (fenced and leased), call its agent outside any transaction.

A run starts only if the subtask is queued at the attempt before it. The start is one
transaction of three statements under the plan's lock: the lock, the fenced UPDATE that
also takes the run's lease and reads the agent's context, and the event. Anything else
a message can find (a duplicate, a stale attempt, a run whose worker died) is told apart
afterwards, on the slow path.
"""

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from execution.agents.base import Step
from execution.agents.registry import UnknownAgent, agent_get
from execution.engine.locks import plan_lock_for
from execution.engine.outcomes import Outcome, outcome_record
from execution.engine.recovery import recover_lost_run
from execution.engine.steps import call_agent
from execution.events import events_append
from execution.leases import lease_release
from execution.models import ExecState, ExecutionState
from execution.transitions import execution_transition
from plans.json_values import storable_text
from plans.models import Plan, PlanStatus, Subtask
from plans.models import SubtaskStatus as S

logger = logging.getLogger(__name__)

_JSON_COLUMNS = ("input", "tool_calls", "conversation", "usage")
_COLUMNS = (
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
    *_JSON_COLUMNS,
)

# The lease CTE runs once (a volatile function is never inlined); the UPDATE changes the
# row only when the lease was taken and the fence holds. The dependencies' results and the
# execution's state are read by this statement, which starts after the plan's lock is held,
# so they are current.
START_SQL = f"""
WITH lease AS (
    SELECT pg_try_advisory_lock(hashtext(%(key)s), %(attempt)s) AS held
), started AS (
    UPDATE plans_subtask s
    SET status = 'running', attempts = %(attempt)s, worker = %(worker)s, started_at = %(now)s, updated_at = %(now)s,
        lease_expires_at = %(now)s + make_interval(secs => (COALESCE(s.timeout_s, %(timeout)s) + %(extra)s)::float)
    FROM lease
    WHERE lease.held AND s.id = %(id)s AND s.status = 'queued' AND s.attempts = %(attempt)s - 1
    RETURNING {", ".join(f"s.{column}" for column in _COLUMNS)},
        (SELECT json_object_agg(
                d.key, json_build_object('description', d.description, 'result', d.result, 'agent', d.agent)
                ORDER BY d.batch_index, d.position)
         FROM plans_subtaskdependency link JOIN plans_subtask d ON d.id = link.depends_on_id
         WHERE link.subtask_id = s.id) AS dependencies,
        (SELECT e.state FROM execution_executionstate e WHERE e.plan_id = s.plan_id) AS execution_state
)
SELECT lease.held, started.* FROM lease LEFT JOIN started ON true
"""


@dataclass(frozen=True)
class Started:
    subtask: Subtask
    context: dict[str, Any]


def subtask_run(*, subtask_id: UUID, attempt: int, worker: str) -> float | None:
    """Run attempt `attempt` of a subtask; return a delay when it should be retried.

    Starts only if the subtask is queued at the previous attempt (fenced); a message for
    a run whose worker died takes the run over instead; anything else is a duplicate or
    stale message and is dropped. The agent runs outside any transaction.
    """
    started = _start(subtask_id=subtask_id, attempt=attempt, worker=worker)
    if started is None:
        return None
    try:
        step: Step | None = None
        history = list(started.context["tool_calls"])
        error = ""
        retry_after: float | None = None
        try:
            agent = agent_get(started.subtask.agent)
        except UnknownAgent:
            agent = None
        try:
            step = call_agent(agent, started.subtask.agent, started.context, history)
        except SoftTimeLimitExceeded:
            error = f"Timed out after {started.subtask.timeout_s or settings.EXECUTION_DEFAULT_TIMEOUT_S}s."
        except Exception as exc:  # an agent's failure, whatever it is, is this attempt's failure
            logger.info("Subtask %s attempt %s failed: %s", subtask_id, attempt, exc, exc_info=True)
            error = storable_text(f"{type(exc).__name__}: {exc}")
            retry_after = getattr(exc, "retry_after", None)
        return outcome_record(
            Outcome(
                subtask=started.subtask,
                attempt=attempt,
                step=step,
                history=history,
                error=error,
                retry_after=retry_after,
            )
        )
    finally:
        lease_release(subtask_id, attempt)


def _start(*, subtask_id: UUID, attempt: int, worker: str) -> Started | None:
    with transaction.atomic():
        try:
            plan = plan_lock_for(subtask_id)
        except Plan.DoesNotExist:
            return None
        if plan.status != PlanStatus.IN_PROGRESS:
            return None
        now = timezone.now()
        held, row = _claim(subtask_id=subtask_id, attempt=attempt, worker=worker, now=now)
        if row is None:
            if held:
                lease_release(subtask_id, attempt)
            _not_started(plan, subtask_id=subtask_id, attempt=attempt, leased=held)
            return None
        subtask = Subtask(**{name: row[name] for name in _COLUMNS}, status=S.RUNNING, worker=worker, started_at=now)
        events_append(
            plan_id=plan.pk,
            events=[
                (
                    "subtask.started",
                    {
                        "subtask_id": subtask.pk,
                        "subtask_key": subtask.key,
                        "previous_status": S.QUEUED,
                        "status": S.RUNNING,
                        "attempt": attempt,
                        "reason": "",
                    },
                )
            ],
            counts={S.QUEUED: -1, S.RUNNING: 1},
        )
        if row["execution_state"] in (ExecState.RESUMED, ExecState.WAITING_APPROVAL):
            execution = ExecutionState.objects.get(plan=plan)
            execution_transition(execution=execution, to=ExecState.RUNNING, reason=f"subtask {subtask.key!r} running")
        return Started(subtask=subtask, context=_context(plan, subtask, row["dependencies"] or {}))


def _claim(*, subtask_id: UUID, attempt: int, worker: str, now: datetime) -> tuple[bool, dict[str, Any] | None]:
    """Take the run's lease and mark the subtask running, fenced; return (lease taken, the row if started)."""
    extra = settings.EXECUTION_HARD_LIMIT_GRACE_S + settings.EXECUTION_LEASE_SLACK_S
    with connection.cursor() as cursor:
        cursor.execute(
            START_SQL,
            {
                "key": str(subtask_id),
                "id": subtask_id,
                "attempt": attempt,
                "worker": worker,
                "now": now,
                "timeout": settings.EXECUTION_DEFAULT_TIMEOUT_S,
                "extra": extra,
            },
        )
        values = cursor.fetchone()
        names = [column.name for column in cursor.description]
    found = dict(zip(names, values, strict=True))
    if found["id"] is None:
        return bool(found["held"]), None
    for name in _JSON_COLUMNS:
        # Django loads jsonb as text for its JSONField; raw statements get the text too.
        if isinstance(found[name], str):
            found[name] = json.loads(found[name])
    return bool(found["held"]), found


def _not_started(plan: Plan, *, subtask_id: UUID, attempt: int, leased: bool) -> None:
    """Tell apart a run whose worker died (take it over) from a duplicate or stale message (drop it)."""
    subtask = Subtask.objects.get(pk=subtask_id)
    if subtask.status == S.RUNNING and subtask.attempts == attempt:
        # Delivered again while marked running: a live (or frozen) run still holds its
        # lease, so this is a duplicate; a free lease means its worker died.
        if leased:
            recover_lost_run(plan=plan, subtask=subtask, reason="its worker was lost; delivered again")
        return
    logger.info(
        "Dropping stale run %s of subtask %s (%s, attempt %s)", attempt, subtask_id, subtask.status, subtask.attempts
    )


def _context(plan: Plan, subtask: Subtask, dependencies: dict[str, Any]) -> dict[str, Any]:
    """Return what the agent sees: the subtask, its plan, its dependencies' results, its tool calls."""
    return {
        "plan_id": str(plan.pk),
        "plan_goal": plan.goal,
        "plan_metadata": plan.metadata,
        "session_id": plan.session_id,
        "subtask_id": str(subtask.pk),
        "subtask_key": subtask.key,
        "description": subtask.description,
        "agent": subtask.agent,
        "input": subtask.input,
        "attempt": subtask.attempts,
        "dependencies": dependencies,
        "tool_calls": list(subtask.tool_calls),
        "conversation": list(subtask.conversation),
        "usage": dict(subtask.usage),
        "execution_mode": "subtask",
    }
