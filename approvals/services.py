"""Human gates: submitting a plan for approval, and deciding approvals exactly once.

A decision locks the plan, then the approval; a second decision (even one arriving at
the same moment) finds it decided and gets AlreadyDecided. Deciding a tool call records
the decision on the subtask and, after commit, enqueues the chain that resumes it and
advances the plan; no one polls.
"""

import logging
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from approvals.models import Approval, ApprovalKind, ApprovalStatus
from execution import engine
from execution.agents.registry import agent_input_errors, agent_names
from execution.events import event_append
from execution.transitions import TransitionNotAllowed
from plans.models import Plan, PlanStatus, Subtask
from plans.services import plan_create, plan_limits
from plans.validation import validate_plan

logger = logging.getLogger(__name__)

EXPIRE_BATCH = 200


class AlreadyDecided(Exception):
    """The approval was decided before; `status` is what it became."""

    def __init__(self, approval: Approval) -> None:
        self.status = approval.status
        super().__init__(f"This approval is already {approval.status}.")


def plan_submit(*, owner: User, data: Any) -> Plan:
    """Validate and store a plan; ask for its approval, or approve (and start) it at once.

    Raise PlanInvalid (with the API error code) when the plan breaks a rule.
    """
    spec = validate_plan(
        data,
        agents=agent_names(),
        limits=plan_limits(),
        check_input=agent_input_errors,
        callbacks_enabled=bool(settings.WEBHOOK_SECRET),
    )
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
            approval_request(plan=plan, kind=ApprovalKind.PLAN)
        else:
            engine.plan_approve(plan=plan, actor=owner.get_username(), reason="no approval required")
    return plan


def approval_request(
    *,
    plan: Plan,
    kind: str,
    subtask: Subtask | None = None,
    call_index: int | None = None,
    tool: str = "",
    arguments: dict[str, Any] | None = None,
) -> Approval:
    """Create a pending approval (the caller holds the plan's lock) and announce it."""
    ttl = settings.APPROVALS_DEFAULT_TTL_S
    approval = Approval.objects.create(
        plan=plan,
        subtask=subtask,
        kind=kind,
        tool=tool,
        arguments=arguments or {},
        call_index=call_index,
        expires_at=timezone.now() + timedelta(seconds=ttl) if ttl else None,
    )
    event_append(plan_id=plan.pk, type="approval.requested", payload=_approval_payload(approval))
    return approval


def plan_approve(*, plan_id: UUID, user: User) -> Plan:
    """Approve a draft plan: decide its pending plan approval (409 unless the plan is a draft)."""
    with transaction.atomic():
        plan = engine.plan_lock(plan_id)
        if plan.status != PlanStatus.DRAFT:
            raise TransitionNotAllowed(
                "plan",
                plan.status,
                PlanStatus.APPROVED,
                f"Only a draft plan can be approved; this one is {plan.status}.",
            )
        approval = (
            Approval.objects.select_for_update()
            .filter(plan=plan, kind=ApprovalKind.PLAN, status=ApprovalStatus.PENDING)
            .first()
        )
        if approval is None:
            engine.plan_approve(plan=plan, actor=user.get_username())
        else:
            _decide(plan, approval, status=ApprovalStatus.APPROVED, user=user)
    return plan


def approval_decide(
    *,
    approval_id: UUID,
    decided_by: User | None,
    approve: bool,
    reason: str = "",
    arguments: dict[str, Any] | None = None,
    result: Any = None,
) -> Approval:
    """Record a decision once, then resume what waited for it (after commit)."""
    return _decide_by_id(
        approval_id,
        status=ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED,
        user=decided_by,
        reason=reason,
        arguments=arguments,
        result=result,
    )


def approvals_expire_overdue() -> int:
    """Expire pending approvals past their expiry: a rejection with reason "expired"."""
    overdue = Approval.objects.filter(status=ApprovalStatus.PENDING, expires_at__lte=timezone.now()).values_list(
        "pk", flat=True
    )
    expired = 0
    for approval_id in list(overdue[:EXPIRE_BATCH]):
        try:
            approval = _decide_by_id(approval_id, status=ApprovalStatus.EXPIRED, user=None, reason="expired")
        except AlreadyDecided:
            continue
        expired += 1
        subject = "plan approval"
        if approval.subtask is not None:
            subject = f"tool call {approval.tool!r} of subtask {approval.subtask.key!r}"
        logger.info("Plan %s: its %s expired undecided", approval.plan_id, subject)
    return expired


def approvals_cancel(*, plan_id: UUID, subtask_ids: list[UUID] | None, reason: str) -> int:
    """Cancel pending approvals of a plan (or of some of its subtasks); the caller holds the plan's lock."""
    pending = Approval.objects.filter(plan_id=plan_id, status=ApprovalStatus.PENDING)
    if subtask_ids is not None:
        pending = pending.filter(subtask_id__in=subtask_ids)
    approvals = list(pending.select_related("subtask"))
    now = timezone.now()
    for approval in approvals:
        approval.status, approval.decided_at, approval.reason = ApprovalStatus.CANCELLED, now, reason
        event_append(plan_id=plan_id, type="approval.resolved", payload=_approval_payload(approval))
    Approval.objects.bulk_update(approvals, ["status", "decided_at", "reason"])
    return len(approvals)


def _decide_by_id(approval_id: UUID, **decision: Any) -> Approval:
    plan_id = Approval.objects.values_list("plan_id", flat=True).get(pk=approval_id)
    with transaction.atomic():
        plan = engine.plan_lock(plan_id)
        approval = Approval.objects.select_for_update(of=("self",)).select_related("subtask").get(pk=approval_id)
        _decide(plan, approval, **decision)
    return approval


def _decide(
    plan: Plan,
    approval: Approval,
    *,
    status: str,
    user: User | None,
    reason: str = "",
    arguments: dict[str, Any] | None = None,
    result: Any = None,
) -> None:
    """Record the decision (the caller holds the plan's and the approval's locks) and act on it."""
    if approval.status != ApprovalStatus.PENDING:
        raise AlreadyDecided(approval)
    actor = user.get_username() if user is not None else "system"
    approved = status == ApprovalStatus.APPROVED
    approval.status = status
    approval.decided_by = user
    approval.decided_at = timezone.now()
    approval.reason = reason
    if approved and approval.kind == ApprovalKind.TOOL_CALL:
        approval.edited_arguments = arguments
        approval.result = result
    approval.save(update_fields=["status", "decided_by", "decided_at", "reason", "edited_arguments", "result"])
    event_append(plan_id=plan.pk, type="approval.resolved", payload=_approval_payload(approval))

    if approval.kind == ApprovalKind.PLAN:
        if approved:
            engine.plan_approve(plan=plan, actor=actor, reason=reason)
        else:
            detail = f": {reason}" if reason and reason != status else ""
            engine.plan_cancel(plan=plan, actor=actor, reason=f"plan approval {status}{detail}")
    else:
        assert approval.subtask_id is not None
        engine.subtask_decision_apply(
            plan=plan,
            subtask_id=approval.subtask_id,
            approval_id=approval.pk,
            approved=approved,
            arguments=arguments,
            result=result,
            reason=reason,
            actor=actor,
        )


def _approval_payload(approval: Approval) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "approval_id": approval.pk,
        "kind": approval.kind,
        "status": approval.status,
    }
    if approval.kind == ApprovalKind.TOOL_CALL and approval.subtask is not None:
        payload.update(
            subtask_id=approval.subtask_id,
            subtask_key=approval.subtask.key,
            tool=approval.tool,
            arguments=approval.arguments,
        )
    if approval.status == ApprovalStatus.PENDING:
        payload["expires_at"] = approval.expires_at
    else:
        payload.update(
            reason=approval.reason, decided_by=approval.decided_by.get_username() if approval.decided_by else "system"
        )
    return payload
