"""The one lock order: a plan's row first, then its rows; and reading a plan's execution after the lock."""

from uuid import UUID

from execution.models import ExecutionState
from plans.models import Plan


def plan_lock(plan_id: UUID) -> Plan:
    """Lock a plan's row for the rest of the transaction and return it.

    Only the plan is selected: after waiting for the lock PostgreSQL re-reads the locked
    row but not rows joined to it, so the execution is read afterwards (see execution_of).
    """
    return Plan.objects.select_for_update().get(pk=plan_id)


def plan_lock_for(subtask_id: UUID) -> Plan:
    """Lock and return the plan of a subtask (see plan_lock)."""
    return Plan.objects.select_for_update(of=("self",)).get(subtasks__id=subtask_id)


def execution_of(plan: Plan) -> ExecutionState | None:
    """Return the plan's execution, or None before it starts."""
    try:
        return plan.execution
    except ExecutionState.DoesNotExist:
        return None
