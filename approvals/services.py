"""Human gates: asking for an approval, and deciding approvals exactly once.

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
from approvals.transitions import AlreadyDecided, approval_payload, approval_transition, approvals_transition
from execution import engine
from execution.events import event_append, events_batched
from execution.operations import operation_require
from plans.models import Plan, Subtask

__all__ = [
    "AlreadyDecided",
    "approval_decide",
    "approval_request",
    "approvals_cancel",
    "approvals_expire_overdue",
    "plan_approve",
]

logger = logging.getLogger(__name__)

EXPIRE_BATCH = 200


def approval_request(
    *,
    plan: Plan,
    kind: str,
    approval_id: UUID | None = None,
    subtask: Subtask | None = None,
    call_index: int | None = None,
    tool: str = "",
    arguments: dict[str, Any] | None = None,
) -> Approval:
    """Create a pending approval (the caller holds the plan's lock) and announce it."""
    ttl = settings.APPROVALS_DEFAULT_TTL_S
    approval = Approval.objects.create(
        **({"pk": approval_id} if approval_id is not None else {}),
        plan=plan,
        subtask=subtask,
        kind=kind,
        tool=tool,
        arguments=arguments or {},
        call_index=call_index,
        expires_at=timezone.now() + timedelta(seconds=ttl) if ttl else None,
    )
    event_append(plan_id=plan.pk, type="approval.requested", payload=approval_payload(approval))
    return approval


def plan_approve(*, plan_id: UUID, user: User) -> Plan:
    """Approve a draft plan: decide its pending plan approval (409 unless the plan is a draft)."""
    with transaction.atomic():
        plan = engine.plan_lock(plan_id)
        operation_require("approve", status=plan.status, state=None)
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
    return approvals_transition(
        approvals=list(pending.select_related("subtask")), to=ApprovalStatus.CANCELLED, reason=reason
    )


def _decide_by_id(approval_id: UUID, **decision: Any) -> Approval:
    with transaction.atomic():
        # The plan first (the one lock order), found through the approval in one query.
        plan = Plan.objects.select_for_update(of=("self",)).get(approvals__id=approval_id)
        approval = Approval.objects.select_for_update(of=("self",)).select_related("subtask").get(pk=approval_id)
        approval.plan = plan
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
    actor = user.get_username() if user is not None else "system"
    approved = status == ApprovalStatus.APPROVED
    if user is not None:  # the system's own decisions (expiry) log lines of their own
        logger.info("Plan %s: %s approval %s %s by %s", plan.pk, approval.kind, approval.pk, status, actor)
    if approval.kind == ApprovalKind.PLAN:
        approval_transition(approval=approval, to=status, decided_by=user, reason=reason)
        if approved:
            engine.plan_approve(plan=plan, actor=actor, reason=reason)
        else:
            detail = f": {reason}" if reason and reason != status else ""
            engine.plan_cancel(plan=plan, actor=actor, reason=f"plan approval {status}{detail}")
        return
    assert approval.subtask is not None
    # The approval, the subtask and the execution change together: their events in one statement.
    with events_batched(plan_id=plan.pk):
        approval_transition(
            approval=approval,
            to=status,
            decided_by=user,
            reason=reason,
            edited_arguments=arguments if approved else None,
            result=result if approved else None,
        )
        engine.subtask_decision_apply(
            plan=plan,
            subtask=approval.subtask,
            approval_id=approval.pk,
            approved=approved,
            arguments=arguments,
            result=result,
            reason=reason,
            actor=actor,
        )
