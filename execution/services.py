"""What people ask of a plan: submit it, revise the draft, then execute, pause, resume, cancel it, retry its subtasks.

One call per request, shared by the API, the admin and the command line. Each locks the
plan, checks the request applies now (plan_operations; TransitionNotAllowed otherwise, HTTP
409), makes the change through the engine (execution/engine/plan_flow.py), and sends
messages only after commit. Deciding approvals (the plan's included) is the approvals app's.
"""

from collections.abc import Collection, Mapping, Sequence
from typing import Any
from uuid import UUID

from django.contrib.auth.models import User
from django.db import transaction

from execution.agents.registry import agent_input_errors, agent_names
from execution.engine.approval_gate import approval_gate
from execution.engine.plan_flow import (
    advance,
    dispatch,
    downstream_ids,
    plan_decision_apply,
    plan_lock,
    plan_start,
    plan_terminate,
)
from execution.events import event_append
from execution.models import ExecState
from execution.selectors import execution_of
from execution.states import EXECUTION_ACTIVE, PLAN_FINISHED, SUBTASK_STOPPED
from execution.transitions import TransitionNotAllowed, execution_transition, plan_transition, subtasks_transition
from execution.webhook_targets import target_problem
from execution.webhooks import webhooks_enabled_for
from plans.models import Plan, PlanStatus, Subtask
from plans.models import SubtaskStatus as S
from plans.revisions import StaleRevision, content_diff, event_diff, fixed_fields_changed, same_json, spec_content
from plans.services import active_plans_quota_hold, plan_content, plan_create, plan_limits, plan_revision_store
from plans.validation import PlanInvalid, PlanSpec, validate_plan

# --- Which requests apply to a plan now: the one rule behind these guards and the desk's buttons ----

PLAN_OPERATIONS = ("approve", "revise", "execute", "pause", "resume", "retry", "cancel")


def plan_operations(*, status: str, state: str | None, has_failed: bool) -> frozenset[str]:
    """Return the operations that apply to a plan in `status` whose execution is in `state`.

    `has_failed`: whether the plan has a failed subtask (what a retry needs).
    """
    running = status == PlanStatus.IN_PROGRESS
    applies = {
        "approve": status == PlanStatus.DRAFT,
        "revise": status == PlanStatus.DRAFT,
        "execute": status == PlanStatus.APPROVED,
        "pause": running and state in EXECUTION_ACTIVE,
        "resume": running and state == ExecState.PAUSED,
        "retry": has_failed and status in (PlanStatus.IN_PROGRESS, PlanStatus.FAILED),
        "cancel": status not in PLAN_FINISHED,
    }
    return frozenset(name for name in PLAN_OPERATIONS if applies[name])


def operation_require(name: str, *, plan: Plan, has_failed: bool = True) -> None:
    """Raise TransitionNotAllowed, saying why, unless the operation applies to the (locked) plan now."""
    status = plan.status
    # Only a plan in progress has an execution state that matters (and its execution is read once).
    execution = execution_of(plan) if status == PlanStatus.IN_PROGRESS else None
    state = execution.state if execution is not None else None
    if name in plan_operations(status=status, state=state, has_failed=has_failed):
        return
    current = state if state is not None and status == PlanStatus.IN_PROGRESS else status
    refusals = {
        "approve": (status, PlanStatus.APPROVED, f"Only a draft plan can be approved; this one is {status}."),
        "revise": (status, PlanStatus.DRAFT, f"Only a draft plan can be revised; this one is {status}."),
        "execute": (status, PlanStatus.IN_PROGRESS, f"Only an approved plan can be executed; this one is {status}."),
        "pause": (current, ExecState.PAUSED, f"Only a running plan can be paused; this one is {current}."),
        "resume": (current, ExecState.RUNNING, f"Only a paused plan can be resumed; this one is {current}."),
        "retry": (
            status,
            PlanStatus.IN_PROGRESS,
            f"The plan is {status}; its subtasks cannot be retried."
            if has_failed
            else "The plan has no failed subtasks to retry.",
        ),
        "cancel": (status, PlanStatus.CANCELLED, f"The plan is already {status}."),
    }
    current_status, target, message = refusals[name]
    raise TransitionNotAllowed("plan", current_status, target, message)


# --- The requests ------------------------------------------------------------------------------------


def plan_submit(*, owner: User, data: Any) -> Plan:
    """Validate and store a plan; ask for its approval, or approve (and start) it at once.

    Raise PlanInvalid (with the API error code) when the plan breaks a rule, or when its
    callback_url's host is not a public address the allow-list does not name; TooManyActivePlans
    when the owner is at PLANS_MAX_ACTIVE_PER_USER.
    """
    spec = _validated(data, owner=owner)
    with transaction.atomic():
        active_plans_quota_hold(owner=owner)
        plan = plan_create(owner=owner, spec=spec)
        plan = plan_lock(plan.pk)
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
        plan_approval_ask(plan=plan, actor=owner.get_username())
    return plan


def plan_revise(
    *, plan_id: UUID, author: User, changes: Any, expected_revisions: Collection[int] | None = None
) -> Plan:
    """Make the changes to a draft its next revision, and ask for the approval of that revision.

    `changes` holds any of the revisable fields (plans/revisions.py: REVISABLE), `subtasks`
    the whole new list; other fields of a submission may be given only as they are. The
    revised submission is validated as a new one would be (PlanInvalid, nothing changed).
    `expected_revisions` (If-Match): the plan must be at one of them, else StaleRevision.
    The pending plan approval is withdrawn and a new one asked for, exactly as on submission.
    Changes that change nothing make no revision.
    """
    if not isinstance(changes, Mapping):
        raise PlanInvalid(
            "validation_error", "The changes must be a JSON object.", {"non_field_errors": ["Expected an object."]}
        )
    with transaction.atomic():
        plan = plan_lock(plan_id)
        operation_require("revise", plan=plan)
        if expected_revisions is not None and plan.revision not in expected_revisions:
            raise StaleRevision(current=plan.revision)
        current = plan_content(plan)
        spec = _validated({**current, **changes}, owner=plan.owner)
        revised = spec_content(spec)
        if fixed := fixed_fields_changed(current, revised):
            first = next(iter(fixed))
            raise PlanInvalid("validation_error", f"Invalid revision: {first}: {fixed[first][0]}", fixed)
        if same_json(current, revised):
            return plan
        revision = plan_revision_store(plan=plan, spec=spec, author=author, diff=content_diff(current, revised))
        actor = author.get_username()
        event_append(plan_id=plan.pk, type="plan.revised", payload=event_diff(revision.diff or {}))
        approval_gate().approvals_withdraw(
            plan_id=plan.pk, subtask_ids=None, reason=f"the plan was revised (revision {plan.revision}) by {actor}"
        )
        plan_approval_ask(plan=plan, actor=actor)
    return plan


def plan_approval_ask(*, plan: Plan, actor: str) -> None:
    """Ask for the approval of a draft as it now stands, or approve (and start) it when it needs none.

    The one path by which a submitted or revised draft asks for its approval.
    """
    # A rule outranks the submission: an "ask" or "deny" rule gates a plan submitted without approval.
    if plan.requires_approval or approval_gate().plan_gated(plan=plan):
        approval_gate().plan_approval_request(plan=plan)
    else:
        plan_decision_apply(plan=plan, approved=True, actor=actor, reason="no approval required")


def _validated(data: Any, *, owner: User) -> PlanSpec:
    """Return the submission as a PlanSpec, or raise PlanInvalid with the rule it breaks."""
    spec = validate_plan(
        data,
        agents=agent_names(),
        limits=plan_limits(),
        check_input=agent_input_errors,
        callbacks_enabled=webhooks_enabled_for(owner),
    )
    if spec.callback_url and (problem := target_problem(spec.callback_url)):
        raise PlanInvalid("validation_error", f"Invalid plan: callback_url: {problem}", {"callback_url": [problem]})
    return spec


@transaction.atomic
def plan_execute(*, plan_id: UUID, actor: str) -> Plan:
    """Start an approved plan that waits for an explicit start (auto_execute off)."""
    plan = plan_lock(plan_id)
    operation_require("execute", plan=plan)
    plan_start(plan=plan, actor=actor)
    return plan


@transaction.atomic
def plan_cancel(*, plan_id: UUID, actor: str, reason: str = "") -> Plan:
    """Cancel a plan: unfinished subtasks cancelled, their messages revoked, approvals withdrawn."""
    plan = plan_lock(plan_id)
    operation_require("cancel", plan=plan)
    plan_terminate(plan=plan, actor=actor, reason=reason or f"cancelled by {actor}")
    return plan


@transaction.atomic
def plan_pause(*, plan_id: UUID, actor: str, reason: str = "") -> Plan:
    """Stop dispatching new work; running subtasks finish and approvals can still be decided."""
    plan = plan_lock(plan_id)
    operation_require("pause", plan=plan)
    execution = execution_of(plan)
    assert execution is not None
    execution_transition(execution=execution, to=ExecState.PAUSED, reason=reason or f"paused by {actor}", actor=actor)
    return plan


@transaction.atomic
def plan_resume(*, plan_id: UUID, actor: str) -> Plan:
    """Continue a paused plan where it stopped."""
    plan = plan_lock(plan_id)
    operation_require("resume", plan=plan)
    execution = execution_of(plan)
    assert execution is not None
    execution_transition(execution=execution, to=ExecState.RUNNING, reason=f"resumed by {actor}", actor=actor)
    # Decisions taken while paused left their subtasks queued without a message.
    held = list(Subtask.objects.filter(plan=plan, status=S.QUEUED, task_id=""))
    if held:
        dispatch(plan, held, batch=False, reason="plan resumed")
    advance(plan)
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
    plan = plan_lock(plan_id)
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
    operation_require("retry", plan=plan, has_failed=bool(subtasks))
    execution = execution_of(plan)
    assert execution is not None
    reason = f"{', '.join(repr(subtask.key) for subtask in subtasks)} retried by {actor}"
    if plan.status == PlanStatus.FAILED:
        plan_transition(plan=plan, to=PlanStatus.IN_PROGRESS, reason=reason, actor=actor, event="plan.retried")
        execution_transition(execution=execution, to=ExecState.RUNNING, reason=reason, actor=actor)
        stopped = Subtask.objects.filter(plan=plan, status__in=SUBTASK_STOPPED)
    else:
        downstream = downstream_ids([subtask.pk for subtask in subtasks])
        stopped = Subtask.objects.filter(plan=plan, status=S.SKIPPED, pk__in=downstream)
    subtasks_transition(subtasks=list(stopped), to=S.PENDING, reason=reason)
    dispatch(plan, subtasks, batch=False, reason=reason, fields=FRESH_START)
    return subtasks
