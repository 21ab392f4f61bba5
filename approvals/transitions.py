"""The one writer of an approval's status: a conditional UPDATE on "pending", checked against approvals/states.py."""

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from approvals.errors import AlreadyDecided
from approvals.models import Approval, ApprovalKind, ApprovalStatus
from approvals.states import APPROVAL_TRANSITIONS
from execution.events import events_append
from execution.states import allowed


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
    channel: str = "",
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
        "channel": channel,
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
    if approval.policy:
        payload["policy"] = approval.policy
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
            reason=approval.reason,
            decided_by=approval.decided_by.get_username() if approval.decided_by else "system",
            channel=approval.channel,
        )
    return payload
