"""How a plan moves: approved and started or sent back, its batches dispatched and advanced, ended, or cancelled.

PostgreSQL is the truth and a Celery message only a wake-up. Every function here runs
under the plan's row lock (the one lock order: the plan's row, then its rows), re-reads
what it needs, and sends messages only after the commit, through canvas.py. The people's
requests (execute, pause, resume, cancel, retry) come in through execution/services.py,
which checks they apply and calls in here.
"""

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any
from uuid import UUID, uuid4

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from common.compiled import CompiledGet
from execution import canvas
from execution.engine.approval_gate import approval_gate
from execution.events import event_append, events_batched
from execution.models import ExecState, ExecutionState
from execution.selectors import execution_cache, execution_of, plan_progress, plan_progress_counted
from execution.states import EXECUTION_FINISHED, SUBTASK_IN_FLIGHT, SUBTASK_UNSETTLED
from execution.transitions import TransitionNotAllowed, execution_transition, plan_transition, subtasks_transition
from plans.models import FailurePolicy, Plan, PlanStatus, Subtask, SubtaskDependency
from plans.models import SubtaskStatus as S
from plans.services import revision_changes_request

logger = logging.getLogger(__name__)

# --- The lock -------------------------------------------------------------------------------


PLAN_LOCKED = CompiledGet(Plan.objects.select_for_update())  # compiled once (common/compiled.py)


def plan_lock(plan_id: UUID) -> Plan:
    """Lock a plan's row for the rest of the transaction and return it.

    Only the plan is selected: after waiting for the lock PostgreSQL re-reads the locked
    row but not rows joined to it, so the execution is read afterwards (execution_of).
    """
    return PLAN_LOCKED.get(plan_id)


# The plan and its execution locked in one statement, the plan's row first (the one lock order:
# PostgreSQL locks in the order FOR UPDATE OF names them). Each row locked after a wait is read as
# it is now, so the execution is current too: for the advance, one statement fewer than
# plan_lock and execution_of.
PLAN_WITH_EXECUTION_LOCKED = CompiledGet(
    ExecutionState.objects.select_for_update(of=("plan", "self")).select_related("plan"), by="plan"
)


def plan_lock_with_execution(plan_id: UUID) -> Plan:
    """Lock a plan's row and its execution's and return the plan, its execution cached (see execution_of)."""
    try:
        execution = PLAN_WITH_EXECUTION_LOCKED.get(plan_id)
    except ExecutionState.DoesNotExist:  # none yet: the plan alone (execution_of reads again under its lock)
        return plan_lock(plan_id)
    plan = execution.plan
    execution_cache(plan, execution)
    return plan


def plan_lock_for(subtask_id: UUID) -> Plan:
    """Lock and return the plan of a subtask (see plan_lock)."""
    return Plan.objects.select_for_update(of=("self",)).get(subtasks__id=subtask_id)


# --- Approved, started, cancelled -------------------------------------------------------------


def plan_decision_apply(*, plan: Plan, approved: bool, actor: str, reason: str = "") -> None:
    """Act on the decision about a draft plan: approved (and started if it runs on approval), or cancelled."""
    if not approved:
        plan_terminate(plan=plan, actor=actor, reason=reason)
        return
    plan_transition(plan=plan, to=PlanStatus.APPROVED, reason=reason, actor=actor)
    if plan.auto_execute:
        plan_start(plan=plan, actor=actor)


def plan_changes_request(*, plan: Plan, actor: str, reason: str, approval_id: UUID) -> None:
    """Keep a draft whose approval was rejected asking for changes: the reason noted on its revision, and announced.

    The plan stays a draft with no pending approval until its owner revises it (which asks
    for a new one) or cancels it.
    """
    if plan.status != PlanStatus.DRAFT:
        message = f"Only a draft plan can be sent back for changes; this one is {plan.status}."
        raise TransitionNotAllowed("plan", plan.status, PlanStatus.DRAFT, message)
    revision_changes_request(plan=plan, reason=reason, requested_by=actor, approval_id=approval_id)
    event_append(
        plan_id=plan.pk,
        type="plan.changes_requested",
        payload={"revision": plan.revision, "reason": reason, "requested_by": actor, "approval_id": approval_id},
    )


def plan_start(*, plan: Plan, actor: str) -> None:
    """Start an approved plan: its execution runs, and its first batch goes out."""
    plan_transition(plan=plan, to=PlanStatus.IN_PROGRESS, actor=actor)
    execution = ExecutionState.objects.create(plan=plan)
    plan.execution = execution
    execution_transition(execution=execution, to=ExecState.RUNNING, reason="execution started", actor=actor)
    advance(plan)


def plan_terminate(*, plan: Plan, actor: str, reason: str) -> None:
    """Cancel a plan that has not finished: its unsettled subtasks cancelled, approvals withdrawn, runs revoked."""
    plan_transition(plan=plan, to=PlanStatus.CANCELLED, reason=reason, actor=actor)
    stop_unfinished(plan, statuses=sorted(SUBTASK_UNSETTLED), reason=reason, plan_approval_too=True)
    execution = execution_of(plan)
    if execution is not None and execution.state not in EXECUTION_FINISHED:
        execution_transition(execution=execution, to=ExecState.CANCELLED, reason=reason, actor=actor)


# --- Advancing: the next batch, or the end ------------------------------------------------------


def plan_advance(*, plan_id: UUID) -> None:
    """Dispatch what can run next, or finish the plan; harmless to call at any time (a chord callback)."""
    with transaction.atomic():
        try:
            plan = plan_lock_with_execution(plan_id)
        except Plan.DoesNotExist:
            return
        advance(plan, counted=True)


def plan_advance_after_run(*, plan_id: UUID) -> None:
    """Advance a plan in the worker whose run has just ended: the step the run's chain would have sent.

    Should the advance fail here (the run's soft time limit coming during it, a lost
    database connection), it is sent to the control queue instead, as the chain would have.
    """
    try:
        plan_advance(plan_id=plan_id)
    except Exception:
        logger.warning("Advancing plan %s after its run failed; sending the advance instead", plan_id, exc_info=True)
        canvas.send_advance(plan_id)


def advance(plan: Plan, *, counted: bool = False) -> None:
    """Dispatch the pending subtasks of the lowest unfinished batch; finish when none is left.

    A batch starts only when every earlier batch has settled, so the current batch is
    the lowest batch with an unsettled subtask. Re-reading the database each time makes
    a chord callback delivered twice, or never (the reconciler calls this too), harmless.
    `counted`: the plan's row was locked just now and nothing has written since, so its
    counters say what its subtasks' rows would: with none pending, nothing is dispatched and
    the subtasks are not read (a plan's last run, or one of several still in flight).
    """
    execution = execution_of(plan)
    if plan.status != PlanStatus.IN_PROGRESS or execution is None or execution.state == ExecState.PAUSED:
        return
    if counted and plan.pending_count == 0:
        in_flight = (plan.queued_count, plan.running_count, plan.waiting_approval_count)
        if any(in_flight):
            settle_execution_state(plan, execution, counts=in_flight)
        else:
            plan_finish(plan, execution, progress=plan_progress_counted(plan))
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


def settle_execution_state(
    plan: Plan, execution: ExecutionState, *, counts: tuple[int, int, int] | None = None
) -> None:
    """Show waiting_approval when all the plan's work in flight waits for a person.

    `counts`: the plan's queued, running and waiting counters when the caller knows them current.
    """
    if execution.state not in (ExecState.RUNNING, ExecState.RESUMED):
        return
    # The counters as this transaction has moved them (the plan object holds those it locked).
    if counts is None:
        counts = (
            Plan.objects.filter(pk=plan.pk).values_list("queued_count", "running_count", "waiting_approval_count").get()
        )
    queued, running, waiting = counts
    if queued == running == 0 and waiting > 0:
        execution_transition(execution=execution, to=ExecState.WAITING_APPROVAL, reason="waiting for approval")


# --- What goes out, and what is stopped -----------------------------------------------------------


def dispatch(
    plan: Plan, subtasks: list[Subtask], *, batch: bool, reason: str, fields: dict[str, Any] | None = None
) -> None:
    """Queue subtasks under new task ids and send them after commit (as one chord if `batch`).

    Each run carries its attempt number (attempts + 1); only a queued subtask still at
    the previous attempt can start it. `fields` are written with the change to queued.
    While the plan is paused nothing is sent: the subtasks stay queued without a message
    (task id "") until the plan resumes. A subtask queued already keeps its status and
    gets the new task id: it is sent again.
    """
    execution = execution_of(plan)
    paused = execution is not None and execution.state == ExecState.PAUSED
    task_ids = {subtask.pk: "" if paused else str(uuid4()) for subtask in subtasks}
    subtasks_transition(subtasks=subtasks, to=S.QUEUED, reason=reason, fields=fields, task_ids=task_ids)
    if paused:
        return
    runs = [
        canvas.Run(
            subtask_id=subtask.pk,
            attempt=subtask.attempts + 1,
            task_id=subtask.task_id,
            timeout_s=subtask.timeout_s or settings.EXECUTION_DEFAULT_TIMEOUT_S,
            agent=subtask.agent,
        )
        for subtask in subtasks
    ]
    send = canvas.send_batch if batch else canvas.send_runs
    # A lost publish (broker down after commit) leaves queued subtasks the reconciler re-sends.
    transaction.on_commit(partial(send, plan.pk, runs), robust=True)


def stop_unfinished(plan: Plan, *, statuses: Sequence[str], reason: str, plan_approval_too: bool) -> None:
    """Cancel the plan's subtasks in these statuses, withdraw their approvals, revoke their messages."""
    targets = list(Subtask.objects.filter(plan=plan, status__in=statuses))
    before = {subtask.pk: subtask.status for subtask in targets}
    subtasks_transition(subtasks=targets, to=S.CANCELLED, reason=reason)
    waiting = [pk for pk, status in before.items() if status == S.WAITING_APPROVAL]
    if waiting or plan_approval_too:
        approval_gate().approvals_withdraw(
            plan_id=plan.pk, subtask_ids=None if plan_approval_too else waiting, reason=reason
        )
    task_ids = [subtask.task_id for subtask in targets if subtask.task_id and before[subtask.pk] in SUBTASK_IN_FLIGHT]
    if task_ids:
        transaction.on_commit(partial(canvas.revoke, task_ids), robust=True)


def skip_downstream(plan: Plan, subtask_ids: list[UUID], *, reason: str) -> None:
    """Skip these subtasks and every pending subtask downstream of them."""
    downstream = downstream_ids(subtask_ids)
    targets = Subtask.objects.filter(plan=plan, pk__in=[*subtask_ids, *downstream], status=S.PENDING)
    subtasks_transition(subtasks=list(targets), to=S.SKIPPED, reason=reason)


def downstream_ids(subtask_ids: list[UUID]) -> list[UUID]:
    """Return the subtasks that depend, directly or not, on any of these."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH RECURSIVE downstream(id) AS (
                SELECT subtask_id FROM plans_subtaskdependency WHERE depends_on_id = ANY(%s::uuid[])
                UNION
                SELECT link.subtask_id FROM plans_subtaskdependency link
                JOIN downstream ON link.depends_on_id = downstream.id
            )
            SELECT id FROM downstream
            """,
            [[str(pk) for pk in subtask_ids]],
        )
        return [row[0] for row in cursor.fetchall()]


# --- How a plan ends ------------------------------------------------------------------------------


def plan_finish(plan: Plan, execution: ExecutionState, *, progress: dict[str, Any] | None = None) -> None:
    """End a plan none of whose subtasks is left to run: completed, or failed if one failed.

    `progress`: the plan's, when the caller has it current (else it is read).
    """
    if progress is None:
        progress = plan_progress(plan_id=plan.pk)
    failed = progress["failed"] > 0
    with events_batched(plan_id=plan.pk):  # the end's three or four events in one statement
        if execution.state == ExecState.WAITING_APPROVAL:
            execution_transition(execution=execution, to=ExecState.RUNNING, reason="no approval pending")
        plan_transition(plan=plan, to=PlanStatus.FAILED if failed else PlanStatus.COMPLETED)
        execution_transition(
            execution=execution,
            to=ExecState.FAILED if failed else ExecState.COMPLETED,
            reason=f"{progress['failed']} subtask(s) failed" if failed else "all subtasks done",
        )
        announce_end(plan, execution, progress)


def failure_policy_apply(plan: Plan, subtask: Subtask) -> None:
    """Apply the plan's failure policy to a subtask that has just failed: fail fast, or skip its dependents."""
    execution = execution_of(plan)
    if plan.status != PlanStatus.IN_PROGRESS or execution is None:
        return
    if plan.failure_policy == FailurePolicy.FAIL_FAST:
        plan_fail(plan, execution, reason=f"subtask {subtask.key!r} failed")
    else:
        skip_downstream(plan, [subtask.pk], reason=f"depends on failed subtask {subtask.key!r}")


def plan_fail(plan: Plan, execution: ExecutionState, *, reason: str) -> None:
    """Fail fast: the plan fails; what has not started is cancelled, running work finishes."""
    # Running subtasks are left to finish; everything else unsettled is cancelled.
    stop_unfinished(plan, statuses=sorted(SUBTASK_UNSETTLED - {S.RUNNING}), reason=reason, plan_approval_too=False)
    plan_transition(plan=plan, to=PlanStatus.FAILED, reason=reason)
    if execution.state not in EXECUTION_FINISHED:
        execution_transition(execution=execution, to=ExecState.FAILED, reason=reason)
    announce_end(plan, execution)


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
