"""The only writer of an approval's status: a decision, checked, made once, and recorded.

Each change is checked against approvals/states.py and made with a conditional UPDATE on
`status = 'pending'`, so of two decisions arriving at once exactly one wins and the other
gets AlreadyDecided; the `approval.resolved` event is written in the same transaction.
"""

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from approvals.models import Approval, ApprovalKind, ApprovalStatus
from approvals.states import APPROVAL_TRANSITIONS
from common.errors import DomainError
from execution.events import event_append, events_append
from execution.states import allowed


class AlreadyDecided(DomainError):
    """The approval was decided before; `status` is what it became."""

    code = "already_decided"
    http_status = 409

    def __init__(self, approval: Approval) -> None:
        self.status = approval.status
        super().__init__(f"This approval is already {approval.status}.", details={"status": approval.status})


def approval_transition(
    *,
    approval: Approval,
    to: str,
    decided_by: User | None,
    reason: str = "",
    edited_arguments: dict[str, Any] | None = None,
    result: Any = None,
) -> None:
    """Decide a pending approval (approved, rejected, expired or cancelled) and record it."""
    if not allowed(APPROVAL_TRANSITIONS, approval.status, to):
        raise AlreadyDecided(approval)
    fields: dict[str, Any] = {
        "status": to,
        "decided_by": decided_by,
        "decided_at": timezone.now(),
        "reason": reason,
        "edited_arguments": edited_arguments,
        "result": result,
    }
    with transaction.atomic(savepoint=False):
        changed = Approval.objects.filter(pk=approval.pk, status=approval.status).update(**fields)
        if changed:
            for name, value in fields.items():
                setattr(approval, name, value)
            event_append(plan_id=approval.plan_id, type="approval.resolved", payload=approval_payload(approval))
    if not changed:
        approval.status = Approval.objects.values_list("status", flat=True).get(pk=approval.pk)
        raise AlreadyDecided(approval)


def approvals_transition(*, approvals: list[Approval], to: str, reason: str) -> int:
    """Decide many pending approvals of one plan the same way (cancel them); return how many changed.

    The caller holds the plan's lock, under which approvals of the plan are decided, so the
    pending ones it read are still pending.
    """
    pending = [approval for approval in approvals if allowed(APPROVAL_TRANSITIONS, approval.status, to)]
    if not pending:
        return 0
    now = timezone.now()
    with transaction.atomic(savepoint=False):
        Approval.objects.filter(pk__in=[a.pk for a in pending], status=ApprovalStatus.PENDING).update(
            status=to, decided_at=now, reason=reason
        )
        for approval in pending:
            approval.status, approval.decided_at, approval.reason = to, now, reason
        events_append(
            plan_id=pending[0].plan_id,
            events=[("approval.resolved", approval_payload(approval)) for approval in pending],
        )
    return len(pending)


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
