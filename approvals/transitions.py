"""The one writer of an approval's status: a conditional UPDATE on "pending", checked against approvals/states.py."""

import contextlib
import json
from collections import defaultdict
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from django.contrib.auth.models import User
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from approvals.errors import AlreadyDecided
from approvals.models import Approval, ApprovalKind, ApprovalStatus
from approvals.states import APPROVAL_TRANSITIONS
from common.context import context_bound
from execution.events import events_append
from execution.states import allowed

# The tool-call decisions of an approvals_held block, written when it ends.
_held: ContextVar[list[Approval] | None] = ContextVar("approvals_held", default=None)
DECISION_FIELDS = ("status", "decided_by", "decided_at", "reason", "channel", "edited_arguments", "result")


def approval_transition(*, approval: Approval, to: str, **decision: Any) -> None:
    """Decide one pending approval (`decision`: as approvals_transition takes it); AlreadyDecided if decided before.

    Inside approvals_held, a tool call's decision is written when the block ends.
    """
    held = _held.get()
    if held is not None and approval.kind == ApprovalKind.TOOL_CALL:
        if not allowed(APPROVAL_TRANSITIONS, approval.status, to):
            raise AlreadyDecided(approval)
        _decided([approval], _fields(to, **decision))
        held.append(approval)
        return
    if not approvals_transition(approvals=[approval], to=to, **decision):
        if approval.status == ApprovalStatus.PENDING:  # decided meanwhile: say how
            approval.status = Approval.objects.values_list("status", flat=True).get(pk=approval.pk)
        raise AlreadyDecided(approval)


def approvals_transition(*, approvals: list[Approval], to: str, reason: str, **decision: Any) -> list[Approval]:
    """Decide pending approvals of one plan the same way, each only if still pending; return those decided.

    `decision`: decided_by, channel, edited_arguments, result (see _fields). Checked against
    approvals/states.py and made with a conditional UPDATE on status "pending", so of two
    decisions arriving at once exactly one wins; the approval.resolved events are written
    in the same transaction. The caller holds the plan's lock, under
    which the plan's approvals are decided, so those it read pending are still pending.
    """
    pending = [approval for approval in approvals if allowed(APPROVAL_TRANSITIONS, approval.status, to)]
    if not pending:
        return []
    fields = _fields(to, reason=reason, **decision)
    with transaction.atomic(savepoint=False):
        changed = Approval.objects.filter(pk__in=[a.pk for a in pending], status=ApprovalStatus.PENDING).update(
            **fields
        )
        if changed != len(pending):
            if changed:  # half made: the caller's transaction must not commit it
                raise AlreadyDecided(pending[0])
            return []
        _decided(pending, fields)
    return pending


def _fields(
    to: str,
    *,
    reason: str,
    decided_by: User | None = None,
    channel: str = "",
    edited_arguments: dict[str, Any] | None = None,
    result: Any = None,
) -> dict[str, Any]:
    """Return the fields a decision writes (DECISION_FIELDS)."""
    return {
        "status": to,
        "decided_by": decided_by,
        "decided_at": timezone.now(),
        "reason": reason,
        "channel": channel,
        "edited_arguments": edited_arguments,
        "result": result,
    }


def _decided(approvals: list[Approval], fields: dict[str, Any]) -> None:
    """Set the decision on the approvals of one plan and append their approval.resolved events."""
    for approval in approvals:
        for name, value in fields.items():
            setattr(approval, name, value)
    events_append(
        plan_id=approvals[0].plan_id,
        events=[("approval.resolved", approval_payload(approval)) for approval in approvals],
    )


@contextlib.contextmanager
def approvals_held() -> Iterator[None]:
    """Write the tool-call decisions a block makes with approval_transition when it ends, one UPDATE for those alike.

    For many decisions in one transaction that holds their plans' and approvals' locks, so
    that an approval read pending stays pending (else AlreadyDecided when the block ends,
    and the transaction must not commit). Call approvals_flush() before reading an approval
    again inside the block.
    """
    held: list[Approval] = []
    with context_bound(_held, held):
        yield
    _write(held)


def approvals_flush() -> None:
    """Write the decisions held so far (see approvals_held)."""
    held = _held.get()
    if held:
        _write(held)
        held.clear()


def _write(held: list[Approval]) -> None:
    """One conditional UPDATE per set of decisions with the same fields (their time: the first one's)."""
    alike: dict[str, list[Approval]] = defaultdict(list)
    for approval in held:
        same = [approval.status, approval.decided_by_id, approval.reason, approval.channel]
        same += [approval.edited_arguments, approval.result]
        alike[json.dumps(same, cls=DjangoJSONEncoder, sort_keys=True)].append(approval)
    for group in alike.values():
        fields = {name: getattr(group[0], name) for name in DECISION_FIELDS}
        ids = [approval.pk for approval in group]
        if Approval.objects.filter(pk__in=ids, status=ApprovalStatus.PENDING).update(**fields) != len(ids):
            raise AlreadyDecided(group[0])
        for approval in group:
            approval.decided_at = fields["decided_at"]


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
