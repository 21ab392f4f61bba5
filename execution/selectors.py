"""Reading a plan's execution records: its transition history and its event log."""

from uuid import UUID

from django.db.models import QuerySet

from execution.models import Event, StateTransition


def plan_transitions(*, plan_id: UUID) -> QuerySet[StateTransition]:
    """Return the state transitions of a plan's execution, oldest first."""
    return StateTransition.objects.filter(execution__plan_id=plan_id).order_by("id")


def plan_events(*, plan_id: UUID, after: int, limit: int) -> QuerySet[Event]:
    """Return up to `limit` events of a plan with a sequence number above `after`, in order."""
    return Event.objects.filter(plan_id=plan_id, seq__gt=after).order_by("seq")[:limit]
