"""Many votes in one request (POST /approvals/decide/): each as approval_decide makes it, independently, in bulk.

The votes go in transactions of MANY_PER_TRANSACTION. A vote is refused (vote_check) before
it writes anything, so a refused vote leaves the others as they are; should a vote fail
while it writes (a conflict the locks rule out), its transaction is undone and made again
with each vote in a savepoint of its own, so that only the failing vote is lost. The resumes
of the committed votes are sent together once the last transaction ends (canvas.sends_held),
as one transaction's would. A transaction locks its plans, then its approvals, each set in
one statement in the order of their ids, so two such requests cannot deadlock; the
executions are read in one statement more. Unless it is made vote by vote, a transaction
writes what its votes on tool calls change when they are all made, a few statements for
them all: the decisions, one statement for those alike (approvals_held); the subtasks and
executions resumed (transitions_held); the events of all its plans (events_batched_across);
the votes of approvals that one vote decides. Each change is checked as it is made, and
written fenced as ever; one found changed meanwhile (which the locks rule out) has the
transaction made again vote by vote.
"""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any
from uuid import UUID

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import prefetch_related_objects

from approvals.errors import AlreadyDecided
from approvals.models import Approval, ApprovalKind, ApprovalStatus, Channel, Vote
from approvals.selectors import approvals_visible_to
from approvals.services import Ballot, vote_check, vote_record
from approvals.transitions import approvals_flush, approvals_held
from common.errors import DomainError
from execution.canvas import sends_held
from execution.engine.plan_flow import plan_lock
from execution.events import events_batched, events_batched_across, events_flush, events_unbatched
from execution.transitions import transitions_flush, transitions_held, transitions_unheld
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
    # Made vote by vote, a vote's savepoint must hold its writes: nothing waits to be written.
    votes: list[Vote] | None = None if savepoints else []
    try:
        with nullcontext() if savepoints else _held_together():
            for decision in decisions:
                approval_id = decision["id"]
                if approval_id not in approvals:
                    outcomes.append((None, None))
                    continue
                plan_id = plan_of[approval_id]
                if plan_id in touched:  # read again, as written so far
                    approvals_flush()
                    transitions_flush()
                    events_flush(plan_id)
                    plans[plan_id] = plan_lock(plan_id)
                    approvals[approval_id] = Approval.objects.select_related("subtask").get(pk=approval_id)
                touched.add(plan_id)
                approvals[approval_id].plan = plans[plan_id]
                ballot = _ballot(decision, user, channel)
                outcomes.append(_vote_one(approvals[approval_id], ballot=ballot, votes=votes))
            if votes:
                Vote.objects.bulk_create(votes)
    except DomainError as error:  # a held decision found its approval decided (which the locks rule out)
        raise _WriteFailed() from error
    return outcomes


@contextmanager
def _held_together() -> Iterator[None]:
    """The decisions, the subtasks' and executions' changes, then the events of all the plans, written at the end."""
    with events_batched_across(), transitions_held(), approvals_held():
        yield


@contextmanager
def _as_they_come() -> Iterator[None]:
    """Write a block's changes and events as they come, inside _held_together (a plan approval's: see _vote_one)."""
    with events_unbatched(), transitions_unheld():
        yield


def _ballot(decision: Mapping[str, Any], user: User, channel: str) -> Ballot:
    approve = decision["approve"]
    return Ballot(
        user=user,
        status=ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED,
        channel=channel,
        reason=decision.get("reason", ""),
        arguments=decision.get("arguments") if approve else None,
        result=decision.get("result") if approve else None,
        remember=decision.get("remember") if approve else None,
    )


def _vote_one(approval: Approval, *, ballot: Ballot, votes: list[Vote] | None) -> Outcome:
    """Check one vote, then record it; return the status and the error.

    `votes` None: the vote is made in a savepoint of its own, all it changes written at
    once. Otherwise its writes wait for the end of the transaction with the others' (see
    _decide_together), but a plan approval's, made as they come (a plan's start reads the
    plan's subtasks and counters).
    """
    savepoint = votes is None
    try:
        vote_check(approval.plan, approval, ballot)
    except DomainError as error:
        return approval.status, error  # read under the locks, and nothing was written
    # A tool call's writes join the transaction's, if held; a plan approval's are made as they come.
    batched = events_batched(plan_id=approval.plan_id) if approval.kind == ApprovalKind.TOOL_CALL else _as_they_come()
    try:
        with transaction.atomic() if savepoint else nullcontext(), batched:
            expired = vote_record(approval.plan, approval, ballot, votes=votes)
    except DomainError as error:
        if not savepoint:
            raise _WriteFailed() from error
        return Approval.objects.values_list("status", flat=True).get(pk=approval.pk), error
    if expired is not None:  # its expiry stands: the vote came too late
        return expired.status, AlreadyDecided(expired)
    return approval.status, None
