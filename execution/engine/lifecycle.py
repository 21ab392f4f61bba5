"""A plan's life from outside: approved, started, cancelled (the caller holds the plan's lock and has checked)."""

from execution.engine.advancing import advance
from execution.engine.dispatching import stop_unfinished
from execution.engine.ending import announce_end
from execution.engine.locks import execution_of
from execution.models import ExecState, ExecutionState
from execution.states import EXECUTION_FINISHED, SUBTASK_UNSETTLED
from execution.transitions import execution_transition, plan_transition
from plans.models import Plan, PlanStatus


def plan_approve(*, plan: Plan, actor: str, reason: str = "") -> None:
    """Approve a draft plan and start it if it runs on approval."""
    plan_transition(plan=plan, to=PlanStatus.APPROVED, reason=reason, actor=actor)
    if plan.auto_execute:
        plan_start(plan=plan, actor=actor)


def plan_start(*, plan: Plan, actor: str) -> None:
    """Start an approved plan: preparing -> running, and its first batch goes out."""
    plan_transition(plan=plan, to=PlanStatus.IN_PROGRESS, actor=actor)
    execution = ExecutionState.objects.create(plan=plan)
    plan.execution = execution
    execution_transition(execution=execution, to=ExecState.RUNNING, reason="execution started", actor=actor)
    advance(plan)


def plan_cancel(*, plan: Plan, actor: str, reason: str) -> None:
    """Cancel a plan that has not finished: its unsettled subtasks cancelled, waits voided, runs revoked."""
    plan_transition(plan=plan, to=PlanStatus.CANCELLED, reason=reason, actor=actor)
    stop_unfinished(plan, statuses=sorted(SUBTASK_UNSETTLED), reason=reason, void_plan_approval=True)
    execution = execution_of(plan)
    if execution is not None and execution.state not in EXECUTION_FINISHED:
        execution_transition(execution=execution, to=ExecState.CANCELLED, reason=reason, actor=actor)
        announce_end(plan, execution)
