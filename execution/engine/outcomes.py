"""Recording what one run of a subtask came to: done, failed, retried, or waiting for decisions.

One transaction under the plan's lock. The first write is the fenced status change on
(running, attempt): when it finds the run stale (a duplicate, a run taken over, a plan
cancelled meanwhile) nothing at all is written. Only after it do the consequences follow:
the failure policy, the approvals to ask for.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from execution.agents.base import Fail, Finish, Step, ToolCall, ToolCalls
from execution.engine.ending import after_failure
from execution.engine.locks import plan_lock_for
from execution.engine.recovery import retry_delay
from execution.engine.waiting import approvals_request, waiting_transition
from execution.tool_calls import ToolCallEntry
from execution.transitions import TransitionConflict, subtask_transition
from execution.transitions.runs import run_finish
from plans.models import PlanStatus, Subtask
from plans.models import SubtaskStatus as S

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What a run came to: a step, or (step None) an error of this attempt."""

    subtask: Subtask
    attempt: int
    step: Step | None
    history: list[ToolCallEntry]
    error: str = ""
    retry_after: float | None = None


def outcome_record(outcome: Outcome) -> tuple[float | None, bool]:
    """Record a run's outcome and apply what follows from it.

    Return a delay when the subtask is to be retried, and whether the run's lease was
    released with the outcome. A result is one statement (the hot path); anything else
    is a transaction under the plan's lock.
    """
    if isinstance(outcome.step, Finish):
        return None, _finish(outcome, outcome.step)
    return _record(outcome), False


def _finish(outcome: Outcome, step: Finish) -> bool:
    subtask = outcome.subtask
    finished, released = run_finish(
        subtask_id=subtask.pk,
        plan_id=subtask.plan_id,
        attempt=outcome.attempt,
        now=timezone.now(),
        result=step.result,
        tool_calls=outcome.history,
        conversation=step.conversation,
        usage=step.usage,
        agent_state=step.state,
    )
    if not finished:
        logger.info("Ignoring the outcome of stale run %s of subtask %s", outcome.attempt, subtask.pk)
    return released


def _record(outcome: Outcome) -> float | None:
    subtask, attempt = outcome.subtask, outcome.attempt
    with transaction.atomic():
        plan = plan_lock_for(subtask.pk)
        in_progress = plan.status == PlanStatus.IN_PROGRESS
        step = outcome.step
        try:
            if step is None and in_progress and subtask.retries < subtask.max_retries:
                return _retry(outcome)
            if step is None:
                step = Fail(
                    f"{outcome.error} (failed {subtask.retries + 1} times)" if subtask.retries else outcome.error
                )
            calls = _calls(step)
            if calls and in_progress:
                waiting_transition(subtask, calls, history=outcome.history, attempt=attempt, state=_state(step))
            else:
                _settle(outcome, step, plan_status=plan.status)
        except TransitionConflict:
            logger.info("Ignoring the outcome of stale run %s of subtask %s", attempt, subtask.pk)
            return None
        subtask.plan = plan
        if calls and in_progress:
            approvals_request(plan, subtask, calls, first_index=len(outcome.history))
        elif isinstance(step, Fail):
            after_failure(plan, subtask)
    return None


def _retry(outcome: Outcome) -> float:
    subtask = outcome.subtask
    delay = retry_delay(subtask.retries, at_least=outcome.retry_after)
    subtask_transition(
        subtask=subtask,
        to=S.QUEUED,
        reason="retrying after an error",
        expect_attempts=outcome.attempt,
        fields={
            "retries": subtask.retries + 1,
            "error": outcome.error,
            "tool_calls": outcome.history,
            "queued_at": _later(delay),
        },
        details={"error": outcome.error, "retry_in_s": delay},
    )
    return delay


def _settle(outcome: Outcome, step: Step, *, plan_status: str) -> None:
    """End the subtask: failed with its error, or cancelled (tool calls asked for after its plan ended)."""
    fields: dict[str, Any] = {"tool_calls": outcome.history, **_state(step)}
    if isinstance(step, Fail):
        to, details = S.FAILED, {"error": step.error}
        fields["error"] = step.error
    else:
        to, details = S.CANCELLED, {}
    subtask_transition(
        subtask=outcome.subtask,
        to=to,
        expect_attempts=outcome.attempt,
        reason="" if to != S.CANCELLED else f"plan is {plan_status}",
        fields=fields,
        details=details,
        progress=True,
    )


def _calls(step: Step) -> list[ToolCall]:
    if isinstance(step, ToolCalls):
        return list(step.calls)
    return [step] if isinstance(step, ToolCall) else []


def _state(step: Step) -> dict[str, Any]:
    """Return the agent's state to store with the subtask: its conversation, usage and state, when it returned them."""
    fields = {"conversation": "conversation", "usage": "usage", "state": "agent_state"}
    return {column: value for name, column in fields.items() if (value := getattr(step, name, None)) is not None}


def _later(delay: float) -> datetime:
    return timezone.now() + timedelta(seconds=delay)
