"""How a plan ends: completed or failed when nothing is left, failed fast, or a failure's dependents skipped."""

from typing import Any

from django.utils import timezone

from execution.engine.dispatching import skip_downstream, stop_unfinished
from execution.engine.locks import execution_of
from execution.events import event_append
from execution.models import ExecState, ExecutionState
from execution.progress import plan_progress
from execution.states import EXECUTION_FINISHED, SUBTASK_UNSETTLED
from execution.transitions import execution_transition, plan_transition
from plans.models import FailurePolicy, Plan, PlanStatus, Subtask
from plans.models import SubtaskStatus as S


def plan_finish(plan: Plan, execution: ExecutionState) -> None:
    """End a plan none of whose subtasks is left to run: completed, or failed if one failed."""
    progress = plan_progress(plan_id=plan.pk)
    failed = progress["failed"] > 0
    if execution.state == ExecState.WAITING_APPROVAL:
        execution_transition(execution=execution, to=ExecState.RUNNING, reason="no approval pending")
    plan_transition(plan=plan, to=PlanStatus.FAILED if failed else PlanStatus.COMPLETED)
    execution_transition(
        execution=execution,
        to=ExecState.FAILED if failed else ExecState.COMPLETED,
        reason=f"{progress['failed']} subtask(s) failed" if failed else "all subtasks done",
    )
    announce_end(plan, execution, progress)


def plan_fail(plan: Plan, execution: ExecutionState, *, reason: str) -> None:
    """Fail fast: the plan fails; what has not started is cancelled, running work finishes."""
    # Running subtasks are left to finish; everything else unsettled is cancelled.
    waiting = sorted(SUBTASK_UNSETTLED - {S.RUNNING})
    stop_unfinished(plan, statuses=waiting, reason=reason, void_plan_approval=False)
    plan_transition(plan=plan, to=PlanStatus.FAILED, reason=reason)
    if execution.state not in EXECUTION_FINISHED:
        execution_transition(execution=execution, to=ExecState.FAILED, reason=reason)
    announce_end(plan, execution)


def after_failure(plan: Plan, subtask: Subtask) -> None:
    """Apply the plan's failure policy to a subtask that has just failed."""
    execution = execution_of(plan)
    if plan.status != PlanStatus.IN_PROGRESS or execution is None:
        return
    if plan.failure_policy == FailurePolicy.FAIL_FAST:
        plan_fail(plan, execution, reason=f"subtask {subtask.key!r} failed")
    else:
        skip_downstream(plan, [subtask.pk], reason=f"depends on failed subtask {subtask.key!r}")


def announce_end(plan: Plan, execution: ExecutionState, progress: dict[str, Any] | None = None) -> None:
    """Append agent.execution.completed: how the plan ended, its progress and how long it took."""
    started = plan.started_at
    event_append(
        plan_id=plan.pk,
        type="agent.execution.completed",
        payload={
            "execution_id": execution.pk,
            "status": plan.status,
            "state": execution.state,
            "progress": progress or plan_progress(plan_id=plan.pk),
            "duration_s": round((timezone.now() - started).total_seconds(), 3) if started else None,
        },
    )
