"""Many votes in one request (POST /approvals/decide/): each as approval_decide makes it, independently, in bulk.

The votes go in transactions of MANY_PER_TRANSACTION. A vote is refused (vote_check) before
it writes anything, so a refused vote leaves the others as they are; should a vote fail
while it writes (a conflict the locks rule out), its transaction is undone and made again
with each vote in a savepoint of its own, so that only the failing vote is lost. The resumes
of the committed votes are sent together once the last transaction ends (canvas.sends_held),
as one transaction's would. A transaction locks its plans, then its approvals, each set in
one statement in the order of their ids, so two such requests cannot deadlock; the
executions are read in one statement more.
"""

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any
from uuid import UUID

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import prefetch_related_objects

from approvals.errors import AlreadyDecided
from approvals.models import Approval, ApprovalKind, ApprovalStatus, Channel
from approvals.selectors import approvals_visible_to
from approvals.services import Ballot, vote_check, vote_record
from common.errors import DomainError
from execution.canvas import sends_held
from execution.engine.plan_flow import plan_lock
from execution.events import events_batched
from plans.models import Plan

# PostgreSQL keeps 64 subtransactions (savepoints that wrote) per transaction in shared memory;
# past that every other session's snapshots get slower, so a transaction holds fewer votes.
MANY_PER_TRANSACTION = 50

Outcome = tuple[str | None, DomainError | None]


def approvals_decide_many(
    *, user: User, decisions: Sequence[Mapping[str, Any]], channel: str = Channel.API
) -> list[Outcome]:
    """Vote on many approvals, each as approval_decide would and independently; return (status, error) per decision.

    `decisions`: `{"id", "approve", "reason"?, "arguments"?, "result"?}`, in the order they are
    made; (None, None) for an approval the user may not see.
    """
    plan_of = dict(approvals_visible_to(user).filter(pk__in={d["id"] for d in decisions}).values_list("pk", "plan_id"))
    outcomes: list[Outcome] = []
    with sends_held():
        for start in range(0, len(decisions), MANY_PER_TRANSACTION):
            chunk = decisions[start : start + MANY_PER_TRANSACTION]
            try:
                outcomes += _decide_together(chunk, plan_of=plan_of, user=user, channel=channel, savepoints=False)
            except _WriteFailed:
                outcomes += _decide_together(chunk, plan_of=plan_of, user=user, channel=channel, savepoints=True)
    return outcomes


class _WriteFailed(Exception):
    """A vote failed while it wrote: its transaction is undone, to be made again vote by vote."""


@transaction.atomic
def _decide_together(
    decisions: Sequence[Mapping[str, Any]], *, plan_of: dict[UUID, UUID], user: User, channel: str, savepoints: bool
) -> list[Outcome]:
    """Make these votes in one transaction (see the module's docstring)."""
    seen = [decision["id"] for decision in decisions if decision["id"] in plan_of]
    locked = Plan.objects.select_for_update().filter(pk__in={plan_of[pk] for pk in seen}).order_by("pk")
    plans = {plan.pk: plan for plan in locked}
    prefetch_related_objects(list(plans.values()), "execution")
    approvals = {
        approval.pk: approval
        for approval in Approval.objects.select_for_update(of=("self",))
        .select_related("subtask")
        .filter(pk__in=seen)
        .order_by("pk")
    }
    outcomes: list[Outcome] = []
    touched: set[UUID] = set()  # plans changed (or a change undone) by an earlier vote: read again
    for decision in decisions:
        approval_id = decision["id"]
        if approval_id not in approvals:
            outcomes.append((None, None))
            continue
        plan_id = plan_of[approval_id]
        if plan_id in touched:
            plans[plan_id] = plan_lock(plan_id)
            approvals[approval_id] = Approval.objects.select_related("subtask").get(pk=approval_id)
        touched.add(plan_id)
        approvals[approval_id].plan = plans[plan_id]
        vote = _vote_one(approvals[approval_id], user=user, channel=channel, decision=decision, savepoint=savepoints)
        outcomes.append(vote)
    return outcomes


def _vote_one(approval: Approval, *, user: User, channel: str, decision: Mapping[str, Any], savepoint: bool) -> Outcome:
    """Check one vote, then record it (in a savepoint of its own if `savepoint`); return the status and the error.

    A tool call's vote and decision write their events in one statement (a plan's start may
    read the plan's counters, so a plan approval's are written as they come).
    """
    approve = decision["approve"]
    ballot = Ballot(
        user=user,
        status=ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED,
        channel=channel,
        reason=decision.get("reason", ""),
        arguments=decision.get("arguments") if approve else None,
        result=decision.get("result") if approve else None,
        remember=decision.get("remember") if approve else None,
    )
    try:
        vote_check(approval.plan, approval, ballot)
    except DomainError as error:
        return approval.status, error  # read under the locks, and nothing was written
    batched = events_batched(plan_id=approval.plan_id) if approval.kind == ApprovalKind.TOOL_CALL else nullcontext()
    try:
        with transaction.atomic() if savepoint else nullcontext(), batched:
            expired = vote_record(approval.plan, approval, ballot)
    except DomainError as error:
        if not savepoint:
            raise _WriteFailed() from error
        return Approval.objects.values_list("status", flat=True).get(pk=approval.pk), error
    if expired is not None:  # its expiry stands: the vote came too late
        return expired.status, AlreadyDecided(expired)
    return approval.status, None
