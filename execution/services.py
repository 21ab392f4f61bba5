"""Use cases of a plan's life: submit it, then execute, pause, resume, cancel it, retry its subtasks.

One call per action, shared by the API, the admin and the command line. Each locks the
plan, checks the action applies (execution/operations.py; TransitionNotAllowed otherwise,
HTTP 409), and sends messages only after commit. Deciding approvals (the plan's included)
is the approvals app's.
"""

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from execution import engine
from execution.agents.registry import agent_input_errors, agent_names
from execution.events import event_append
from execution.models import ExecState
from execution.operations import operation_require
from execution.signals import plan_approval_requested
from execution.states import SUBTASK_STOPPED
from execution.transitions import TransitionNotAllowed, execution_transition, plan_transition, subtasks_transition
from execution.webhook_targets import target_problem
from plans.models import Plan, PlanStatus, Subtask
from plans.models import SubtaskStatus as S
from plans.services import plan_create, plan_limits
from plans.validation import PlanInvalid, validate_plan


def plan_submit(*, owner: User, data: Any) -> Plan:
    """Validate and store a plan; ask for its approval, or approve (and start) it at once.

    Raise PlanInvalid (with the API error code) when the plan breaks a rule, or when its
    callback_url's host is not a public address the allow-list does not name.
    """
    spec = validate_plan(
        data,
        agents=agent_names(),
        limits=plan_limits(),
        check_input=agent_input_errors,
        callbacks_enabled=bool(settings.WEBHOOK_SECRET),
    )
    if spec.callback_url and (problem := target_problem(spec.callback_url)):
        raise PlanInvalid("validation_error", f"Invalid plan: callback_url: {problem}", {"callback_url": [problem]})
    with transaction.atomic():
        plan = plan_create(owner=owner, spec=spec)
        plan = engine.plan_lock(plan.pk)
        event_append(
            plan_id=plan.pk,
            type="plan.created",
            payload={
                "goal": plan.goal,
                "session_id": plan.session_id,
                "subtasks": len(spec.subtasks),
                "batches": len(spec.batches),
            },
        )
        if plan.requires_approval:
            # The approvals app creates the pending plan approval in this transaction.
            plan_approval_requested.send(sender=Plan, plan=plan)
        else:
            engine.plan_approve(plan=plan, actor=owner.get_username(), reason="no approval required")
    return plan


# What a retried subtask forgets: it runs again from scratch.
FRESH_START = {
    "retries": 0,
    "lost_runs": 0,
    "error": "",
    "result": None,
    "tool_calls": [],
    "conversation": [],
    "usage": {},
    "agent_state": {},
}


def _state(plan: Plan) -> str | None:
    execution = engine.execution_of(plan)
    return execution.state if execution is not None else None


@transaction.atomic
def plan_execute(*, plan_id: UUID, actor: str) -> Plan:
    """Start an approved plan that waits for an explicit start (auto_execute off)."""
    plan = engine.plan_lock(plan_id)
    operation_require("execute", status=plan.status, state=_state(plan))
    engine.plan_start(plan=plan, actor=actor)
    return plan


@transaction.atomic
def plan_cancel(*, plan_id: UUID, actor: str, reason: str = "") -> Plan:
    """Cancel a plan: unfinished subtasks cancelled, their messages revoked, waits voided."""
    plan = engine.plan_lock(plan_id)
    operation_require("cancel", status=plan.status, state=_state(plan))
    engine.plan_cancel(plan=plan, actor=actor, reason=reason or f"cancelled by {actor}")
    return plan


@transaction.atomic
def plan_pause(*, plan_id: UUID, actor: str, reason: str = "") -> Plan:
    """Stop dispatching new work; running subtasks finish and approvals can still be decided."""
    plan = engine.plan_lock(plan_id)
    execution = engine.execution_of(plan)
    operation_require("pause", status=plan.status, state=_state(plan))
    assert execution is not None
    execution_transition(execution=execution, to=ExecState.PAUSED, reason=reason or f"paused by {actor}", actor=actor)
    return plan


@transaction.atomic
def plan_resume(*, plan_id: UUID, actor: str) -> Plan:
    """Continue a paused plan where it stopped."""
    plan = engine.plan_lock(plan_id)
    execution = engine.execution_of(plan)
    operation_require("resume", status=plan.status, state=_state(plan))
    assert execution is not None
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
    operation_require("retry", status=plan.status, state=_state(plan), has_failed=bool(subtasks))
    execution = engine.execution_of(plan)
    assert execution is not None
    reason = f"{', '.join(repr(subtask.key) for subtask in subtasks)} retried by {actor}"
    if plan.status == PlanStatus.FAILED:
        plan_transition(plan=plan, to=PlanStatus.IN_PROGRESS, reason=reason, actor=actor, event="plan.retried")
        execution_transition(execution=execution, to=ExecState.RUNNING, reason=reason, actor=actor)
        stopped = Subtask.objects.filter(plan=plan, status__in=SUBTASK_STOPPED)
    else:
        downstream = engine.downstream_ids([subtask.pk for subtask in subtasks])
        stopped = Subtask.objects.filter(plan=plan, status=S.SKIPPED, pk__in=downstream)
    subtasks_transition(subtasks=list(stopped), to=S.PENDING, reason=reason)
    engine.dispatch(plan, subtasks, batch=False, reason=reason, fields=FRESH_START)
    return subtasks
