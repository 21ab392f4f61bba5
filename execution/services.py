"""Operator actions on a plan's execution: execute, pause, resume, cancel, retry a subtask.

One call per action, shared by the API, the admin and the command line. Each locks the
plan, checks the action applies (TransitionNotAllowed otherwise: HTTP 409), and sends
messages only after commit.
"""

from collections.abc import Sequence
from uuid import UUID

from django.db import transaction

from execution import engine
from execution.models import ExecState
from execution.states import EXECUTION_ACTIVE, PLAN_FINISHED
from execution.transitions import TransitionNotAllowed, execution_transition, plan_transition, subtasks_transition
from plans.models import Plan, PlanStatus, Subtask
from plans.models import SubtaskStatus as S


@transaction.atomic
def plan_execute(*, plan_id: UUID, actor: str) -> Plan:
    """Start an approved plan that waits for an explicit start (auto_execute off)."""
    plan = engine.plan_lock(plan_id)
    if plan.status != PlanStatus.APPROVED:
        raise TransitionNotAllowed(
            "plan",
            plan.status,
            PlanStatus.IN_PROGRESS,
            f"Only an approved plan can be executed; this one is {plan.status}.",
        )
    engine.plan_start(plan=plan, actor=actor)
    return plan


@transaction.atomic
def plan_cancel(*, plan_id: UUID, actor: str, reason: str = "") -> Plan:
    """Cancel a plan: unfinished subtasks cancelled, their messages revoked, waits voided."""
    plan = engine.plan_lock(plan_id)
    if plan.status in PLAN_FINISHED:
        raise TransitionNotAllowed("plan", plan.status, PlanStatus.CANCELLED, f"The plan is already {plan.status}.")
    engine.plan_cancel(plan=plan, actor=actor, reason=reason or f"cancelled by {actor}")
    return plan


@transaction.atomic
def plan_pause(*, plan_id: UUID, actor: str, reason: str = "") -> Plan:
    """Stop dispatching new work; running subtasks finish and approvals can still be decided."""
    plan = engine.plan_lock(plan_id)
    execution = engine.execution_of(plan)
    if plan.status != PlanStatus.IN_PROGRESS or execution is None or execution.state not in EXECUTION_ACTIVE:
        current = execution.state if execution is not None and plan.status == PlanStatus.IN_PROGRESS else plan.status
        raise TransitionNotAllowed(
            "plan", current, ExecState.PAUSED, f"Only a running plan can be paused; this one is {current}."
        )
    execution_transition(execution=execution, to=ExecState.PAUSED, reason=reason or f"paused by {actor}", actor=actor)
    return plan


@transaction.atomic
def plan_resume(*, plan_id: UUID, actor: str) -> Plan:
    """Continue a paused plan where it stopped."""
    plan = engine.plan_lock(plan_id)
    execution = engine.execution_of(plan)
    if plan.status != PlanStatus.IN_PROGRESS or execution is None or execution.state != ExecState.PAUSED:
        current = execution.state if execution is not None and plan.status == PlanStatus.IN_PROGRESS else plan.status
        raise TransitionNotAllowed(
            "plan", current, ExecState.RUNNING, f"Only a paused plan can be resumed; this one is {current}."
        )
    execution_transition(execution=execution, to=ExecState.RUNNING, reason=f"resumed by {actor}", actor=actor)
    # Decisions taken while paused left their subtasks queued without a message.
    held = list(Subtask.objects.filter(plan=plan, status=S.QUEUED, task_id=""))
    if held:
        engine.dispatch(plan, held, batch=False, reason="plan resumed")
    engine.advance(plan)
    return plan


def subtask_retry(*, plan_id: UUID, key: str, actor: str) -> Subtask:
    """Run a failed subtask again from scratch and put its plan back in progress (see subtasks_retry)."""
    return subtasks_retry(plan_id=plan_id, keys=[key], actor=actor)[0]


@transaction.atomic
def subtasks_retry(*, plan_id: UUID, keys: Sequence[str], actor: str) -> list[Subtask]:
    """Run failed subtasks again from scratch, all or none, and put their plan back in progress.

    What the failures stopped runs again too: subtasks skipped downstream of them, and
    under fail_fast the subtasks cancelled when the plan failed. Raise Subtask.DoesNotExist
    for an unknown key and TransitionNotAllowed when a subtask has not failed.
    """
    plan = engine.plan_lock(plan_id)
    subtasks = list(Subtask.objects.filter(plan=plan, key__in=keys).order_by("batch_index", "position"))
    missing = sorted(set(keys) - {subtask.key for subtask in subtasks})
    if missing:
        raise Subtask.DoesNotExist(f"The plan has no subtask {', '.join(map(repr, missing))}.")
    for subtask in subtasks:
        if subtask.status != S.FAILED:
            raise TransitionNotAllowed(
                "subtask",
                subtask.status,
                S.QUEUED,
                f"Only a failed subtask can be retried; {subtask.key!r} is {subtask.status}.",
            )
    if plan.status not in (PlanStatus.IN_PROGRESS, PlanStatus.FAILED):
        raise TransitionNotAllowed(
            "plan", plan.status, PlanStatus.IN_PROGRESS, f"The plan is {plan.status}; its subtasks cannot be retried."
        )
    execution = engine.execution_of(plan)
    assert execution is not None
    reason = f"{', '.join(repr(subtask.key) for subtask in subtasks)} retried by {actor}"
    if plan.status == PlanStatus.FAILED:
        plan_transition(plan=plan, to=PlanStatus.IN_PROGRESS, reason=reason, actor=actor, event="plan.retried")
        execution_transition(execution=execution, to=ExecState.RUNNING, reason=reason, actor=actor)
        stopped = Subtask.objects.filter(plan=plan, status__in=[S.SKIPPED, S.CANCELLED])
    else:
        downstream = engine.downstream_ids([subtask.pk for subtask in subtasks])
        stopped = Subtask.objects.filter(plan=plan, status=S.SKIPPED, pk__in=downstream)
    subtasks_transition(subtasks=list(stopped), to=S.PENDING, reason=reason)
    Subtask.objects.filter(pk__in=[subtask.pk for subtask in subtasks]).update(
        retries=0, lost_runs=0, error="", result=None, tool_calls=[]
    )
    for subtask in subtasks:
        subtask.retries, subtask.lost_runs, subtask.error, subtask.result, subtask.tool_calls = 0, 0, "", None, []
    engine.dispatch(plan, subtasks, batch=False, reason=reason)
    return subtasks
