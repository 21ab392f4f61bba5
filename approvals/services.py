"""People's decisions: asking for an approval, deciding it exactly once, and resuming what waited for it.

A decision locks the plan, then the approval; a second decision (even one arriving at the
same moment) finds it decided and gets AlreadyDecided. Deciding a tool call records the
decision on the subtask and, after commit, enqueues the chain that resumes it and advances
the plan (execution/engine/waits.py); deciding a plan approval starts or cancels the plan
(execution/engine/plan_flow.py). No one polls. The engine asks for approvals and withdraws
them through ApprovalsGate, registered in approvals/apps.py.
"""

import logging
from collections.abc import Collection
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from approvals.models import Approval, ApprovalKind, ApprovalStatus
from approvals.states import APPROVAL_TRANSITIONS
from common.errors import DomainError
from execution.engine.plan_flow import plan_changes_request, plan_decision_apply, plan_lock
from execution.engine.waits import subtask_decision_apply
from execution.events import event_append, events_append, events_batched
from execution.services import operation_require
from execution.states import allowed
from plans.models import Plan, Subtask
from plans.revisions import StaleRevision

logger = logging.getLogger(__name__)

EXPIRE_BATCH = 200


class AlreadyDecided(DomainError):
    """The approval was decided before; `status` is what it became."""

    code = "already_decided"
    http_status = 409

    def __init__(self, approval: Approval) -> None:
        self.status = approval.status
        super().__init__(f"This approval is already {approval.status}.", details={"status": approval.status})


class ChangesNotApplicable(DomainError):
    """Changes were asked for where they cannot be: on a tool call, or with an approval."""

    code = "validation_error"
    http_status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message, details={"request_changes": [message]})


# --- Asking, and what the engine calls ----------------------------------------------------------------


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


def approvals_cancel(*, plan_id: UUID, subtask_ids: list[UUID] | None, reason: str) -> int:
    """Cancel pending approvals of a plan (or of some of its subtasks); the caller holds the plan's lock."""
    pending = Approval.objects.filter(plan_id=plan_id, status=ApprovalStatus.PENDING)
    if subtask_ids is not None:
        pending = pending.filter(subtask_id__in=subtask_ids)
    return len(
        approvals_transition(
            approvals=list(pending.select_related("subtask")), to=ApprovalStatus.CANCELLED, reason=reason
        )
    )


class ApprovalsGate:
    """The engine's approval gate (execution/engine/approval_gate.py), kept by this app."""

    def plan_approval_request(self, *, plan: Plan) -> None:
        approval_request(plan=plan, kind=ApprovalKind.PLAN)

    def tool_call_request(
        self, *, subtask: Subtask, approval_id: UUID, call_index: int, tool: str, arguments: dict[str, Any]
    ) -> None:
        approval_request(
            plan=subtask.plan,
            kind=ApprovalKind.TOOL_CALL,
            approval_id=approval_id,
            subtask=subtask,
            call_index=call_index,
            tool=tool,
            arguments=arguments,
        )

    def approvals_withdraw(self, *, plan_id: UUID, subtask_ids: list[UUID] | None, reason: str) -> None:
        approvals_cancel(plan_id=plan_id, subtask_ids=subtask_ids, reason=reason)


# --- Deciding -------------------------------------------------------------------------------------------


def plan_approve(*, plan_id: UUID, user: User, expected_revisions: Collection[int] | None = None) -> Plan:
    """Approve a draft plan: decide its pending plan approval (409 unless the plan is a draft).

    `expected_revisions` (If-Match): approve only a revision the approver read (else StaleRevision).
    """
    with transaction.atomic():
        plan = plan_lock(plan_id)
        operation_require("approve", plan=plan)
        if expected_revisions is not None and plan.revision not in expected_revisions:
            raise StaleRevision(current=plan.revision)
        approval = (
            Approval.objects.select_for_update()
            .filter(plan=plan, kind=ApprovalKind.PLAN, status=ApprovalStatus.PENDING)
            .first()
        )
        if approval is None:
            plan_decision_apply(plan=plan, approved=True, actor=user.get_username())
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
    request_changes: bool = False,
) -> Approval:
    """Record a decision once, then resume what waited for it (after commit).

    `request_changes`: a plan approval rejected so keeps its plan a draft for its owner to
    revise (ChangesNotApplicable for anything else).
    """
    if request_changes and approve:
        raise ChangesNotApplicable("Changes are requested by rejecting the plan approval, not by approving it.")
    return _decide_by_id(
        approval_id,
        status=ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED,
        user=decided_by,
        reason=reason,
        arguments=arguments,
        result=result,
        request_changes=request_changes,
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
    request_changes: bool = False,
) -> None:
    """Record the decision (the caller holds the plan's and the approval's locks) and act on it."""
    actor = user.get_username() if user is not None else "system"
    approved = status == ApprovalStatus.APPROVED
    if request_changes and approval.kind != ApprovalKind.PLAN:
        raise ChangesNotApplicable("Only a plan approval can ask for changes; reject a tool call with a reason.")
    if user is not None:  # the system's own decisions (expiry) log lines of their own
        logger.info("Plan %s: %s approval %s %s by %s", plan.pk, approval.kind, approval.pk, status, actor)
    if approval.kind == ApprovalKind.PLAN:
        approval_transition(approval=approval, to=status, decided_by=user, reason=reason)
        if request_changes:
            plan_changes_request(plan=plan, actor=actor, reason=reason, approval_id=approval.pk)
            return
        detail = f": {reason}" if reason and reason != status else ""
        plan_decision_apply(
            plan=plan, approved=approved, actor=actor, reason=reason if approved else f"plan approval {status}{detail}"
        )
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
        subtask_decision_apply(
            plan=plan,
            subtask=approval.subtask,
            approval_id=approval.pk,
            approved=approved,
            arguments=arguments,
            result=result,
            reason=reason,
            actor=actor,
        )


# --- The one writer of an approval's status ------------------------------------------------------------


def approval_transition(*, approval: Approval, to: str, **decision: Any) -> None:
    """Decide one pending approval (`decision`: as approvals_transition takes it); AlreadyDecided if decided before."""
    if not approvals_transition(approvals=[approval], to=to, **decision):
        if approval.status == ApprovalStatus.PENDING:  # decided meanwhile: say how
            approval.status = Approval.objects.values_list("status", flat=True).get(pk=approval.pk)
        raise AlreadyDecided(approval)


def approvals_transition(
    *,
    approvals: list[Approval],
    to: str,
    reason: str,
    decided_by: User | None = None,
    edited_arguments: dict[str, Any] | None = None,
    result: Any = None,
) -> list[Approval]:
    """Decide pending approvals of one plan the same way, each only if still pending; return those decided.

    Checked against approvals/states.py and made with a conditional UPDATE on status
    "pending", so of two decisions arriving at once exactly one wins; the approval.resolved
    events are written in the same transaction. The caller holds the plan's lock, under
    which the plan's approvals are decided, so those it read pending are still pending.
    """
    pending = [approval for approval in approvals if allowed(APPROVAL_TRANSITIONS, approval.status, to)]
    if not pending:
        return []
    fields: dict[str, Any] = {
        "status": to,
        "decided_by": decided_by,
        "decided_at": timezone.now(),
        "reason": reason,
        "edited_arguments": edited_arguments,
        "result": result,
    }
    with transaction.atomic(savepoint=False):
        changed = Approval.objects.filter(pk__in=[a.pk for a in pending], status=ApprovalStatus.PENDING).update(
            **fields
        )
        if changed != len(pending):
            if changed:  # half made: the caller's transaction must not commit it
                raise AlreadyDecided(pending[0])
            return []
        for approval in pending:
            for name, value in fields.items():
                setattr(approval, name, value)
        events_append(
            plan_id=pending[0].plan_id,
            events=[("approval.resolved", approval_payload(approval)) for approval in pending],
        )
    return pending


def approval_payload(approval: Approval) -> dict[str, Any]:
    """Return what the approval events say about an approval."""
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
