"""Running one attempt of a subtask: start it (fenced and leased), call its agent outside any transaction.

A run starts only if the subtask is queued at the attempt before it. The start is one
statement (execution/transitions/runs.py) that locks the plan, takes the run's lease,
marks the subtask running and reads the agent's context. Anything else a message can
find (a duplicate, a stale attempt, a run whose worker died) is told apart afterwards,
on the slow path, under the plan's lock.
"""

import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from execution.agents.base import Step
from execution.agents.registry import UnknownAgent, agent_get
from execution.engine.locks import execution_of, plan_lock_for
from execution.engine.outcomes import Outcome, outcome_record
from execution.engine.recovery import recover_lost_run
from execution.engine.steps import call_agent
from execution.leases import lease_release
from execution.models import ExecState
from execution.transitions import execution_transition
from execution.transitions.runs import RunStart, run_start
from plans.json_values import storable_text
from plans.models import Plan, PlanStatus, Subtask
from plans.models import SubtaskStatus as S

logger = logging.getLogger(__name__)


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
    released = False
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
        outcome = Outcome(
            subtask=started.subtask, attempt=attempt, step=step, history=history, error=error, retry_after=retry_after
        )
        delay, released = outcome_record(outcome)
        return delay
    finally:
        if not released:
            lease_release(subtask_id, attempt)


def _start(*, subtask_id: UUID, attempt: int, worker: str) -> Started | None:
    """Start the run in one statement; on anything but a start, find out why under the plan's lock."""
    now = timezone.now()
    found = run_start(
        subtask_id=subtask_id,
        attempt=attempt,
        worker=worker,
        now=now,
        timeout_s=settings.EXECUTION_DEFAULT_TIMEOUT_S,
        lease_extra_s=settings.EXECUTION_HARD_LIMIT_GRACE_S + settings.EXECUTION_LEASE_SLACK_S,
    )
    if found is None or found.plan_status != PlanStatus.IN_PROGRESS:
        return None
    if found.row is None:
        if found.leased:
            lease_release(subtask_id, attempt)
        _not_started(subtask_id=subtask_id, attempt=attempt, leased=found.leased)
        return None
    subtask = Subtask(**found.row, status=S.RUNNING, worker=worker, started_at=now)
    if found.execution_state in (ExecState.RESUMED, ExecState.WAITING_APPROVAL):
        _execution_running(subtask)
    return Started(subtask=subtask, context=_context(found, subtask))


def _execution_running(subtask: Subtask) -> None:
    """Show the execution running again now that a subtask runs (after a decision)."""
    with transaction.atomic():
        plan = plan_lock_for(subtask.pk)
        execution = execution_of(plan)
        if execution is not None and execution.state in (ExecState.RESUMED, ExecState.WAITING_APPROVAL):
            execution_transition(execution=execution, to=ExecState.RUNNING, reason=f"subtask {subtask.key!r} running")


def _not_started(*, subtask_id: UUID, attempt: int, leased: bool) -> None:
    """Tell apart a run whose worker died (take it over) from a duplicate or stale message (drop it)."""
    with transaction.atomic():
        try:
            plan = plan_lock_for(subtask_id)
        except Plan.DoesNotExist:
            return
        subtask = Subtask.objects.get(pk=subtask_id)
        if plan.status == PlanStatus.IN_PROGRESS and subtask.status == S.RUNNING and subtask.attempts == attempt:
            # Delivered again while marked running: a live (or frozen) run still holds its
            # lease, so this is a duplicate; a free lease means its worker died.
            if leased:
                recover_lost_run(plan=plan, subtask=subtask, reason="its worker was lost; delivered again")
            return
    logger.info(
        "Dropping stale run %s of subtask %s (%s, attempt %s)", attempt, subtask_id, subtask.status, subtask.attempts
    )


def _context(found: RunStart, subtask: Subtask) -> dict[str, Any]:
    """Return what the agent sees: the subtask, its plan, its dependencies' results, its tool calls."""
    return {
        "plan_id": str(subtask.plan_id),
        "plan_goal": found.plan_goal,
        "plan_metadata": found.plan_metadata,
        "session_id": found.plan_session_id,
        "subtask_id": str(subtask.pk),
        "subtask_key": subtask.key,
        "description": subtask.description,
        "agent": subtask.agent,
        "input": subtask.input,
        "attempt": subtask.attempts,
        "dependencies": found.dependencies,
        "tool_calls": list(subtask.tool_calls),
        "conversation": list(subtask.conversation),
        "usage": dict(subtask.usage),
        "agent_state": dict(subtask.agent_state),
        "execution_mode": "subtask",
    }
