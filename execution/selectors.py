"""Reading a plan's execution: its execution record, progress, current subtasks, transition history and event log."""

from typing import Any
from uuid import UUID

from django.db.models import QuerySet

from execution.events import COUNTERS, progress_of
from execution.models import Event, ExecutionState, StateTransition
from execution.states import SUBTASK_ACTIVE
from plans.models import Plan, Subtask
from plans.models import SubtaskStatus as S


def execution_of(plan: Plan) -> ExecutionState | None:
    """Return the plan's execution, or None before it starts."""
    try:
        return plan.execution
    except ExecutionState.DoesNotExist:
        return None


def plan_progress(*, plan_id: UUID) -> dict[str, Any]:
    """Return counts per status (queued counts as pending) and the percentage done, from the plan's counters."""
    row = Plan.objects.filter(pk=plan_id).values_list("subtask_count", *COUNTERS).get()
    return progress_of(dict(zip(S.values, row[1:], strict=True)), row[0])


def current_subtask_keys(*, plan_id: UUID) -> list[str]:
    """Return the keys of the subtasks in flight (queued, running, waiting for approval)."""
    return list(
        Subtask.objects.filter(plan_id=plan_id, status__in=SUBTASK_ACTIVE)
        .order_by("batch_index", "position")
        .values_list("key", flat=True)
    )


def plan_transitions(*, plan_id: UUID) -> QuerySet[StateTransition]:
    """Return the state transitions of a plan's execution, oldest first."""
    return StateTransition.objects.filter(execution__plan_id=plan_id).order_by("id")


def plan_events(*, plan_id: UUID, after: int, limit: int) -> QuerySet[Event]:
    """Return up to `limit` events of a plan with a sequence number above `after`, in order."""
    return Event.objects.filter(plan_id=plan_id, seq__gt=after).order_by("seq")[:limit]
