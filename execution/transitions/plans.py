"""Plan and execution status changes: checked against the tables, made with a conditional UPDATE, recorded."""

from typing import Any

from django.db import transaction
from django.utils import timezone

from execution.events import event_append
from execution.models import ExecutionState, StateTransition
from execution.states import EXECUTION_TRANSITIONS, PLAN_FINISHED, PLAN_TRANSITIONS, allowed
from execution.transitions.errors import TransitionConflict, TransitionNotAllowed
from plans.models import Plan, PlanStatus

PLAN_EVENTS: dict[str, str] = {
    PlanStatus.APPROVED: "plan.approved",
    PlanStatus.IN_PROGRESS: "plan.started",
    PlanStatus.COMPLETED: "plan.completed",
    PlanStatus.FAILED: "plan.failed",
    PlanStatus.CANCELLED: "plan.cancelled",
}


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
