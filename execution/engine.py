"""What runs next: starting plans, dispatching batches, running one subtask, advancing.

PostgreSQL is the truth and a Celery message is only a wake-up. Every function here
that writes first locks the plan's row (the one lock order: plan, then its rows), re-reads
what it needs, and sends messages only after the commit. Runs are fenced on
(status, attempt), so a duplicate message or a worker that wakes up late changes nothing.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any
from uuid import UUID, uuid4

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from execution import canvas
from execution.agents.base import Fail, Finish, Step, ToolCall
from execution.agents.registry import UnknownAgent, agent_get
from execution.events import event_append
from execution.leases import lease_acquire, lease_release
from execution.models import ExecState, ExecutionState
from execution.progress import plan_progress
from execution.signals import tool_call_requested, waits_cancelled
from execution.states import EXECUTION_FINISHED
from execution.transitions import execution_transition, plan_transition, subtask_transition, subtasks_transition
from plans.models import FailurePolicy, Plan, PlanStatus, Subtask, SubtaskDependency
from plans.models import SubtaskStatus as S

logger = logging.getLogger(__name__)

UNSETTLED = [S.PENDING, S.QUEUED, S.RUNNING, S.WAITING_APPROVAL]
MAX_AUTO_TOOL_CALLS = 100


def plan_lock_for(subtask_id: UUID) -> Plan:
    """Lock and return the plan of a subtask (see plan_lock)."""
    return Plan.objects.select_for_update(of=("self",)).get(subtasks__id=subtask_id)


def plan_lock(plan_id: UUID) -> Plan:
    """Lock a plan's row for the rest of the transaction and return it.

    Only the plan is selected: after waiting for the lock PostgreSQL re-reads the locked
    row but not rows joined to it, so the execution is read afterwards (see execution_of).
    """
    return Plan.objects.select_for_update().get(pk=plan_id)


def execution_of(plan: Plan) -> ExecutionState | None:
    try:
        return plan.execution
    except ExecutionState.DoesNotExist:
        return None


# --- Starting and advancing ----------------------------------------------------------------


def plan_approve(*, plan: Plan, actor: str, reason: str = "") -> None:
    """Approve a draft plan (the caller holds its lock) and start it if it runs on approval."""
    plan_transition(plan=plan, to=PlanStatus.APPROVED, reason=reason, actor=actor)
    if plan.auto_execute:
        plan_start(plan=plan, actor=actor)


def plan_start(*, plan: Plan, actor: str) -> None:
    """Start an approved plan (the caller holds its lock): preparing -> running, first batch."""
    plan_transition(plan=plan, to=PlanStatus.IN_PROGRESS, actor=actor)
    execution = ExecutionState.objects.create(plan=plan)
    plan.execution = execution
    execution_transition(execution=execution, to=ExecState.RUNNING, reason="execution started", actor=actor)
    advance(plan)


def plan_cancel(*, plan: Plan, actor: str, reason: str) -> None:
    """Cancel a plan that has not finished (the caller holds its lock and has checked)."""
    plan_transition(plan=plan, to=PlanStatus.CANCELLED, reason=reason, actor=actor)
    stop_unfinished(plan, statuses=UNSETTLED, reason=reason, void_plan_approval=True)
    execution = execution_of(plan)
    if execution is not None and execution.state not in EXECUTION_FINISHED:
        execution_transition(execution=execution, to=ExecState.CANCELLED, reason=reason, actor=actor)
        announce_end(plan, execution)


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
    """
    execution = execution_of(plan)
    if plan.status != PlanStatus.IN_PROGRESS or execution is None or execution.state == ExecState.PAUSED:
        return
    while True:
        unsettled = Subtask.objects.filter(plan=plan, status__in=UNSETTLED).order_by("batch_index", "position")
        first = unsettled.only("batch_index").first()
        if first is None:
            _finish(plan, execution)
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
                _fail_plan(plan, execution, reason=f"a dependency of {blocked[0].key!r} has failed")
                return
            _skip(plan, [subtask.pk for subtask in blocked], reason="a dependency failed")
        if ready:
            dispatch(plan, ready, batch=True, reason=f"batch {first.batch_index}")
        if ready or len(blocked) < len(current):
            break
    _settle_execution_state(plan, execution)


def _settle_execution_state(plan: Plan, execution: ExecutionState) -> None:
    """Show waiting_approval when all the plan's work in flight waits for a human."""
    if execution.state not in (ExecState.RUNNING, ExecState.RESUMED):
        return
    statuses = set(
        Subtask.objects.filter(plan=plan, status__in=[S.QUEUED, S.RUNNING, S.WAITING_APPROVAL])
        .values_list("status", flat=True)
        .distinct()
    )
    if statuses == {S.WAITING_APPROVAL}:
        execution_transition(execution=execution, to=ExecState.WAITING_APPROVAL, reason="waiting for approval")


def _finish(plan: Plan, execution: ExecutionState) -> None:
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


def announce_end(plan: Plan, execution: ExecutionState, progress: dict[str, Any] | None = None) -> None:
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


def dispatch(plan: Plan, subtasks: list[Subtask], *, batch: bool, reason: str) -> None:
    """Queue subtasks under new task ids and send them after commit (as one chord if `batch`).

    Each run carries its attempt number (attempts + 1); only a queued subtask still at
    the previous attempt can start it. While the plan is paused nothing is sent: the
    subtasks stay queued without a message until the plan resumes.
    """
    to_queue = [subtask for subtask in subtasks if subtask.status != S.QUEUED]
    if to_queue:
        subtasks_transition(subtasks=to_queue, to=S.QUEUED, reason=reason)
    execution = execution_of(plan)
    if execution is not None and execution.state == ExecState.PAUSED:
        for subtask in subtasks:
            subtask.task_id = ""
        Subtask.objects.bulk_update(subtasks, ["task_id"])
        return
    for subtask in subtasks:
        subtask.task_id = str(uuid4())
    Subtask.objects.bulk_update(subtasks, ["task_id"])
    runs = [
        canvas.Run(
            subtask_id=subtask.pk,
            attempt=subtask.attempts + 1,
            task_id=subtask.task_id,
            timeout_s=subtask.timeout_s or settings.EXECUTION_DEFAULT_TIMEOUT_S,
        )
        for subtask in subtasks
    ]
    send = canvas.send_batch if batch else canvas.send_runs
    # A lost publish (broker down after commit) leaves queued subtasks the reconciler re-sends.
    transaction.on_commit(partial(send, plan.pk, runs), robust=True)


def _skip(plan: Plan, subtask_ids: list[UUID], *, reason: str) -> None:
    """Skip these subtasks and every pending subtask downstream of them."""
    downstream = downstream_ids(subtask_ids)
    targets = Subtask.objects.filter(plan=plan, pk__in=[*subtask_ids, *downstream], status=S.PENDING)
    subtasks_transition(subtasks=list(targets), to=S.SKIPPED, reason=reason)


def downstream_ids(subtask_ids: list[UUID]) -> list[UUID]:
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


def _fail_plan(plan: Plan, execution: ExecutionState, *, reason: str) -> None:
    """Fail fast: the plan fails; what has not started is cancelled, running work finishes."""
    stop_unfinished(plan, statuses=[S.PENDING, S.QUEUED, S.WAITING_APPROVAL], reason=reason, void_plan_approval=False)
    plan_transition(plan=plan, to=PlanStatus.FAILED, reason=reason)
    if execution.state not in EXECUTION_FINISHED:
        execution_transition(execution=execution, to=ExecState.FAILED, reason=reason)
    announce_end(plan, execution)


def stop_unfinished(plan: Plan, *, statuses: Sequence[str], reason: str, void_plan_approval: bool) -> None:
    """Cancel the plan's subtasks in these statuses, void their waits, revoke their messages."""
    targets = list(Subtask.objects.filter(plan=plan, status__in=statuses))
    before = {subtask.pk: subtask.status for subtask in targets}
    subtasks_transition(subtasks=targets, to=S.CANCELLED, reason=reason)
    waiting = [pk for pk, status in before.items() if status == S.WAITING_APPROVAL]
    if waiting or void_plan_approval:
        waits_cancelled.send(
            sender=Plan, plan_id=plan.pk, subtask_ids=None if void_plan_approval else waiting, reason=reason
        )
    task_ids = [
        subtask.task_id for subtask in targets if subtask.task_id and before[subtask.pk] in (S.QUEUED, S.RUNNING)
    ]
    if task_ids:
        transaction.on_commit(partial(canvas.revoke, task_ids), robust=True)


# --- Running one subtask -------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    subtask: Subtask
    agent_name: str
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
    try:
        auto_calls: list[dict[str, Any]] = []
        step: Step | None = None
        error = ""
        try:
            step = _call_agent(started, auto_calls)
        except SoftTimeLimitExceeded:
            error = f"Timed out after {started.subtask.timeout_s or settings.EXECUTION_DEFAULT_TIMEOUT_S}s."
        except Exception as exc:  # an agent's failure, whatever it is, is this attempt's failure
            logger.info("Subtask %s attempt %s failed: %s", subtask_id, attempt, exc, exc_info=True)
            error = f"{type(exc).__name__}: {exc}"
        return _record_outcome(subtask_id=subtask_id, attempt=attempt, step=step, error=error, auto_calls=auto_calls)
    finally:
        lease_release(subtask_id, attempt)


def _start(*, subtask_id: UUID, attempt: int, worker: str) -> Started | None:
    with transaction.atomic():
        try:
            plan = plan_lock_for(subtask_id)
        except Plan.DoesNotExist:
            return None
        subtask = Subtask.objects.get(pk=subtask_id)
        if plan.status != PlanStatus.IN_PROGRESS:
            return None
        if subtask.status == S.RUNNING and subtask.attempts == attempt:
            # Delivered again while marked running: a live (or frozen) run still holds its
            # lease, so this is a duplicate; a free lease means its worker died.
            if lease_acquire(subtask_id, attempt):
                lease_release(subtask_id, attempt)
                recover_lost_run(plan=plan, subtask=subtask, reason="its worker was lost; delivered again")
            return None
        if subtask.status != S.QUEUED or subtask.attempts != attempt - 1:
            logger.info(
                "Dropping stale run %s of subtask %s (%s, attempt %s)",
                attempt,
                subtask_id,
                subtask.status,
                subtask.attempts,
            )
            return None
        if not lease_acquire(subtask_id, attempt):
            return None
        timeout = subtask.timeout_s or settings.EXECUTION_DEFAULT_TIMEOUT_S
        lease = timeout + settings.EXECUTION_HARD_LIMIT_GRACE_S + settings.EXECUTION_LEASE_SLACK_S
        subtask_transition(
            subtask=subtask,
            to=S.RUNNING,
            expect_attempts=attempt - 1,
            fields={
                "attempts": attempt,
                "worker": worker,
                "lease_expires_at": timezone.now() + timedelta(seconds=lease),
            },
        )
        execution = execution_of(plan)
        if execution is not None and execution.state in (ExecState.RESUMED, ExecState.WAITING_APPROVAL):
            execution_transition(execution=execution, to=ExecState.RUNNING, reason=f"subtask {subtask.key!r} running")
        return Started(subtask=subtask, agent_name=subtask.agent, context=_context(plan, subtask))


def _context(plan: Plan, subtask: Subtask) -> dict[str, Any]:
    """Return what the agent sees: the subtask, its plan, its dependencies' results, its tool calls."""
    dependencies = Subtask.objects.filter(dependent_links__subtask=subtask).order_by("position")
    return {
        "plan_id": str(plan.pk),
        "plan_goal": plan.goal,
        "plan_metadata": plan.metadata,
        "session_id": plan.session_id,
        "subtask_id": str(subtask.pk),
        "subtask_key": subtask.key,
        "description": subtask.description,
        "agent": subtask.agent,
        "input": subtask.input,
        "attempt": subtask.attempts,
        "dependencies": {
            dep.key: {"description": dep.description, "result": dep.result, "agent": dep.agent}
            for dep in dependencies.only("key", "description", "result", "agent")
        },
        "tool_calls": list(subtask.tool_calls),
        "execution_mode": "subtask",
    }


def _call_agent(started: Started, auto_calls: list[dict[str, Any]]) -> Step:
    """Call the agent until it returns a result, a failure, or a tool call needing approval."""
    try:
        agent = agent_get(started.agent_name)
    except UnknownAgent:
        return Fail(f"Agent {started.agent_name!r} is not registered.")
    context = started.context
    for _ in range(MAX_AUTO_TOOL_CALLS):
        step = agent.run(context)
        if not isinstance(step, ToolCall) or step.requires_approval:
            return step
        # Calls that need no approval are noted and the agent goes on at once.
        entry = {
            "tool": step.tool,
            "arguments": step.arguments,
            "requires_approval": False,
            "status": "auto",
            "result": None,
        }
        auto_calls.append(entry)
        context = {**context, "tool_calls": [*context["tool_calls"], entry]}
    return Fail(f"The agent made more than {MAX_AUTO_TOOL_CALLS} tool calls without approval in a row.")


def _record_outcome(
    *, subtask_id: UUID, attempt: int, step: Step | None, error: str, auto_calls: list[dict[str, Any]]
) -> float | None:
    with transaction.atomic():
        plan = plan_lock_for(subtask_id)
        subtask = Subtask.objects.get(pk=subtask_id)
        if subtask.status != S.RUNNING or subtask.attempts != attempt:
            logger.info("Ignoring the outcome of stale run %s of subtask %s", attempt, subtask_id)
            return None
        calls = [*subtask.tool_calls, *auto_calls]
        in_progress = plan.status == PlanStatus.IN_PROGRESS
        if step is None:
            if in_progress and subtask.retries < subtask.max_retries:
                delay = retry_delay(subtask.retries)
                subtask_transition(
                    subtask=subtask,
                    to=S.QUEUED,
                    reason="retrying after an error",
                    expect_attempts=attempt,
                    fields={
                        "retries": subtask.retries + 1,
                        "error": error,
                        "tool_calls": calls,
                        "queued_at": timezone.now() + timedelta(seconds=delay),
                    },
                    details={"error": error, "retry_in_s": delay},
                )
                return delay
            step = Fail(f"{error} (failed {subtask.retries + 1} times)" if subtask.retries else error)
        if isinstance(step, Finish):
            subtask_transition(
                subtask=subtask,
                to=S.DONE,
                expect_attempts=attempt,
                fields={"result": step.result, "error": "", "tool_calls": calls},
                details={"result": step.result},
            )
        elif isinstance(step, ToolCall) and in_progress:
            _wait_for_approval(plan, subtask, step, calls, attempt)
            return None
        elif isinstance(step, ToolCall):
            subtask_transition(
                subtask=subtask, to=S.CANCELLED, expect_attempts=attempt, reason=f"plan is {plan.status}"
            )
        else:
            assert isinstance(step, Fail)
            subtask_transition(
                subtask=subtask,
                to=S.FAILED,
                expect_attempts=attempt,
                fields={"error": step.error, "tool_calls": calls},
                details={"error": step.error},
            )
            _after_failure(plan, subtask)
        _announce_progress(plan)
        return None


def _wait_for_approval(plan: Plan, subtask: Subtask, step: ToolCall, calls: list[dict[str, Any]], attempt: int) -> None:
    call_index = len(calls)
    approval_id = uuid4()
    entry = {
        "tool": step.tool,
        "arguments": step.arguments,
        "requires_approval": True,
        "status": "pending",
        "result": None,
        "approval_id": str(approval_id),
    }
    subtask_transition(
        subtask=subtask,
        to=S.WAITING_APPROVAL,
        expect_attempts=attempt,
        reason=f"tool call {step.tool!r} needs approval",
        fields={"tool_calls": [*calls, entry]},
        details={"tool": step.tool, "call_index": call_index},
    )
    # The approvals app creates the Approval (and its event) in this transaction.
    tool_call_requested.send(
        sender=Subtask,
        subtask=subtask,
        approval_id=approval_id,
        call_index=call_index,
        tool=step.tool,
        arguments=step.arguments,
    )
    execution = execution_of(plan)
    if execution is not None and execution.state in (ExecState.RUNNING, ExecState.RESUMED):
        execution_transition(
            execution=execution, to=ExecState.WAITING_APPROVAL, reason=f"{subtask.key!r} asks to call {step.tool!r}"
        )


def _after_failure(plan: Plan, subtask: Subtask) -> None:
    """Apply the plan's failure policy to a subtask that has just failed."""
    execution = execution_of(plan)
    if plan.status != PlanStatus.IN_PROGRESS or execution is None:
        return
    if plan.failure_policy == FailurePolicy.FAIL_FAST:
        _fail_plan(plan, execution, reason=f"subtask {subtask.key!r} failed")
    else:
        _skip(plan, [subtask.pk], reason=f"depends on failed subtask {subtask.key!r}")


def _announce_progress(plan: Plan) -> None:
    event_append(plan_id=plan.pk, type="agent.execution.progress", payload=plan_progress(plan_id=plan.pk))


def retry_delay(retries: int) -> float:
    """Return the backoff before retry number `retries + 1`: base * 2^retries, capped.

    Capped below half the broker's visibility timeout too: Redis would deliver a
    countdown message held longer than that a second time.
    """
    cap = min(settings.EXECUTION_RETRY_BACKOFF_CAP_S, settings.CELERY_VISIBILITY_TIMEOUT_S / 2)
    return float(min(cap, settings.EXECUTION_RETRY_BACKOFF_BASE_S * 2**retries))


def recover_lost_run(*, plan: Plan, subtask: Subtask, reason: str) -> None:
    """Re-dispatch a running subtask whose run was lost, or fail it as poison.

    The caller holds the plan's lock and has checked the run is gone (its lease is
    free) or hung (past its lease). The new run is the next attempt, so if the old one
    comes back to life its outcome is fenced off.
    """
    lost_runs = subtask.lost_runs + 1
    if lost_runs >= settings.EXECUTION_MAX_LOST_RUNS:
        error = f"Poison: its run was lost {lost_runs} times (worker killed or hung); it is not dispatched again."
        subtask_transition(
            subtask=subtask,
            to=S.FAILED,
            expect_attempts=subtask.attempts,
            reason=reason,
            fields={"lost_runs": lost_runs, "error": error},
            details={"error": error},
        )
        _after_failure(plan, subtask)
        _announce_progress(plan)
        return
    subtask_transition(
        subtask=subtask, to=S.QUEUED, expect_attempts=subtask.attempts, reason=reason, fields={"lost_runs": lost_runs}
    )
    dispatch(plan, [subtask], batch=False, reason=reason)


def subtask_decision_apply(
    *,
    plan: Plan,
    subtask_id: UUID,
    approval_id: UUID,
    approved: bool,
    arguments: dict[str, Any] | None,
    result: Any,
    reason: str,
    actor: str,
) -> bool:
    """Record a decision on a subtask's pending tool call and resume it (after commit).

    The caller holds the plan's lock and has recorded the Approval's decision. Return
    False when the subtask no longer waits for this call (it was cancelled meanwhile).
    """
    subtask = Subtask.objects.get(pk=subtask_id, plan=plan)
    if subtask.status != S.WAITING_APPROVAL:
        return False
    calls = [dict(entry) for entry in subtask.tool_calls]
    index = next(
        (
            i
            for i, entry in enumerate(calls)
            if entry.get("approval_id") == str(approval_id) and entry["status"] == "pending"
        ),
        None,
    )
    if index is None:
        return False
    calls[index].update(
        status="approved" if approved else "rejected",
        approved_arguments=(arguments if arguments is not None else calls[index]["arguments"]) if approved else None,
        result=result if approved else None,
        reason=reason,
        decided_by=actor,
        decided_at=timezone.now().isoformat(),
    )
    subtask_transition(
        subtask=subtask,
        to=S.QUEUED,
        reason=f"tool call {calls[index]['tool']!r} {'approved' if approved else 'rejected'}",
        fields={"tool_calls": calls},
    )
    execution = execution_of(plan)
    if execution is not None and execution.state == ExecState.WAITING_APPROVAL:
        execution_transition(
            execution=execution,
            to=ExecState.RESUMED,
            actor=actor,
            reason=f"approval {approval_id} {'approved' if approved else 'rejected'}",
            metadata={"approval_id": str(approval_id), "subtask_key": subtask.key},
        )
    dispatch(plan, [subtask], batch=False, reason="resumed after a decision")
    return True
