"""The one writer of an approval's status: a conditional UPDATE on "pending", checked against approvals/states.py."""

import contextlib
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from django.contrib.auth.models import User
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from approvals.errors import AlreadyDecided
from approvals.models import Approval, ApprovalKind, ApprovalStatus, Vote
from approvals.states import APPROVAL_TRANSITIONS
from common.context import context_bound
from common.prepared import prepared_cursor
from execution.events import events_append
from execution.states import allowed

# The tool-call decisions of an approvals_held block, written when it ends.
_held: ContextVar[list[Approval] | None] = ContextVar("approvals_held", default=None)
DECISION_FIELDS = ("status", "decided_by", "decided_at", "reason", "channel", "edited_arguments", "result")


def approval_transition(*, approval: Approval, to: str, votes: Sequence[Vote] = (), **decision: Any) -> None:
    """Decide one pending approval (`decision`: as approvals_transition takes it); AlreadyDecided if decided before.

    `votes`: new votes on it (the one that decides it), inserted in the decision's statement.
    Inside approvals_held, a tool call's decision is written when the block ends.
    """
    held = _held.get()
    if held is not None and approval.kind == ApprovalKind.TOOL_CALL and not votes:
        if not allowed(APPROVAL_TRANSITIONS, approval.status, to):
            raise AlreadyDecided(approval)
        _decided([approval], _fields(to, **decision))
        held.append(approval)
        return
    if not approvals_transition(approvals=[approval], to=to, votes=votes, **decision):
        if approval.status == ApprovalStatus.PENDING:  # decided meanwhile: say how
            approval.status = Approval.objects.values_list("status", flat=True).get(pk=approval.pk)
        raise AlreadyDecided(approval)


def approvals_transition(
    *, approvals: list[Approval], to: str, reason: str, votes: Sequence[Vote] = (), **decision: Any
) -> list[Approval]:
    """Decide pending approvals of one plan the same way, each only if still pending; return those decided.

    `decision`: decided_by, channel, edited_arguments, result (see _fields). Checked against
    approvals/states.py and made with a conditional UPDATE on status "pending", so of two
    decisions arriving at once exactly one wins; the approval.resolved events are written
    in the same transaction. The caller holds the plan's lock, under
    which the plan's approvals are decided, so those it read pending are still pending.
    `votes` are inserted in the same statement, only if the decision is made.
    """
    pending = [approval for approval in approvals if allowed(APPROVAL_TRANSITIONS, approval.status, to)]
    if not pending:
        return []
    fields = _fields(to, reason=reason, **decision)
    with transaction.atomic(savepoint=False):
        changed = _decide_voting([a.pk for a in pending], fields, votes)
        if changed != len(pending):
            if changed:  # half made: the caller's transaction must not commit it
                raise AlreadyDecided(pending[0])
            return []
        _decided(pending, fields)
    return pending


_DECIDED = [field for field in Approval._meta.concrete_fields if field.name in DECISION_FIELDS]
_VOTED = [field for field in Vote._meta.concrete_fields if not field.primary_key]


def _decide_voting(ids: list[Any], fields: dict[str, Any], votes: Sequence[Vote]) -> int:
    """Decide the approvals still pending and insert the votes with the decision, in one statement.

    Return how many were decided; the votes are inserted only if one was. Names come from
    the models, values go as parameters.
    """
    sets = ", ".join(f"{field.column} = %s" for field in _DECIDED)
    params = [field.get_db_prep_save(_column_value(field, fields[field.name]), connection) for field in _DECIDED]
    params += [ids, ApprovalStatus.PENDING]
    voted, voted_ids = "", "NULL"
    if votes:
        columns = ", ".join(str(field.column) for field in _VOTED)
        rows = ", ".join(["(" + ", ".join(["%s"] * len(_VOTED)) + ")"] * len(votes))
        voted = (
            f", voted AS (INSERT INTO {Vote._meta.db_table} ({columns}) SELECT * FROM (VALUES {rows}) AS vote "  # nosec B608
            "WHERE EXISTS (SELECT FROM decided) RETURNING id)"
        )
        voted_ids = "ARRAY(SELECT id FROM voted)"
        for vote in votes:
            params += [field.get_db_prep_save(field.pre_save(vote, True), connection) for field in _VOTED]
    sql = (
        f"WITH decided AS (UPDATE {Approval._meta.db_table} SET {sets} "  # nosec B608
        f"WHERE id = ANY(%s) AND status = %s RETURNING id){voted} SELECT (SELECT count(*) FROM decided), {voted_ids}"
    )
    # Prepared for one vote or none (a decision's); many votes' text varies with their number (see _update_each).
    with prepared_cursor(connection, prepare=len(votes) <= 1) as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    for vote, pk in zip(votes, row[1], strict=True) if row[1] else ():  # none when nothing was decided
        vote.pk = pk
        vote._state.adding, vote._state.db = False, connection.alias
    return row[0]


def _column_value(field: Any, value: Any) -> Any:
    """Return what a field's column holds for a value (a related object: its key)."""
    return value.pk if field.is_relation and value is not None else value


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
        if _decide_voting([approval.pk for approval in group], fields, ()) != len(group):
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
