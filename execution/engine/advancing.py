"""Advancing a plan: dispatch its next batch when the current one has settled, or end it."""

from uuid import UUID

from django.db import transaction

from execution.engine.dispatching import dispatch, skip_downstream
from execution.engine.ending import plan_fail, plan_finish
from execution.engine.locks import execution_of, plan_lock
from execution.models import ExecState, ExecutionState
from execution.states import SUBTASK_UNSETTLED
from execution.transitions import execution_transition
from plans.models import FailurePolicy, Plan, PlanStatus, Subtask, SubtaskDependency
from plans.models import SubtaskStatus as S


def plan_advance(*, plan_id: UUID) -> None:
    """Dispatch what can run next, or finish the plan; harmless to call at any time."""
    with transaction.atomic():
        try:
            plan = plan_lock(plan_id)
        except Plan.DoesNotExist:
            return
        advance(plan)


def advance(plan: Plan) -> None:
    """Dispatch the pending subtasks of the lowest unfinished batch; finish when none is left.

    A batch starts only when every earlier batch has settled, so the current batch is
    the lowest batch with an unsettled subtask. Re-reading the database each time makes
    a chord callback delivered twice, or never (the reconciler calls this too), harmless.
    The caller holds the plan's lock.
    """
    execution = execution_of(plan)
    if plan.status != PlanStatus.IN_PROGRESS or execution is None or execution.state == ExecState.PAUSED:
        return
    while True:
        unsettled = Subtask.objects.filter(plan=plan, status__in=SUBTASK_UNSETTLED).order_by("batch_index", "position")
        first = unsettled.only("batch_index").first()
        if first is None:
            plan_finish(plan, execution)
            return
        current = list(unsettled.filter(batch_index=first.batch_index))
        pending = [subtask for subtask in current if subtask.status == S.PENDING]
        blocked_ids = set(
            SubtaskDependency.objects.filter(subtask__in=pending)
            .exclude(depends_on__status=S.DONE)
            .values_list("subtask_id", flat=True)
        )
        blocked = [subtask for subtask in pending if subtask.pk in blocked_ids]
        ready = [subtask for subtask in pending if subtask.pk not in blocked_ids]
        if blocked:
            # Only after a partial retry: a dependency failed again, or is still failed.
            if plan.failure_policy == FailurePolicy.FAIL_FAST:
                plan_fail(plan, execution, reason=f"a dependency of {blocked[0].key!r} has failed")
                return
            skip_downstream(plan, [subtask.pk for subtask in blocked], reason="a dependency failed")
        if ready:
            dispatch(plan, ready, batch=True, reason=f"batch {first.batch_index}")
        if ready or len(blocked) < len(current):
            break
    settle_execution_state(plan, execution)


def settle_execution_state(plan: Plan, execution: ExecutionState) -> None:
    """Show waiting_approval when all the plan's work in flight waits for a human."""
    if execution.state not in (ExecState.RUNNING, ExecState.RESUMED):
        return
    # The counters as this transaction has moved them (the plan object holds those it locked).
    queued, running, waiting = (
        Plan.objects.filter(pk=plan.pk).values_list("queued_count", "running_count", "waiting_approval_count").get()
    )
    if queued == running == 0 and waiting > 0:
        execution_transition(execution=execution, to=ExecState.WAITING_APPROVAL, reason="waiting for approval")
