"""People's decisions: asking for an approval, deciding it exactly once, and resuming what waited for it.

A decision locks the plan, then the approval; a second decision (even one arriving at the
same moment) finds it decided and gets AlreadyDecided. Deciding a tool call records the
decision on the subtask and, after commit, enqueues the chain that resumes it and advances
the plan (execution/engine/waits.py); deciding a plan approval starts or cancels the plan
(execution/engine/plan_flow.py). No one polls. The engine asks for approvals and withdraws
them through ApprovalsGate, registered in approvals/apps.py.
"""

import logging
from collections.abc import Collection, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from approvals.errors import (
    AlreadyDecided,
    AlreadyVoted,
    ApprovalNotFound,
    ChangesNotApplicable,
    VoteInvalid,
    VoteRefused,
)
from approvals.grants import grant_applying, grant_make, remember_problem
from approvals.models import Approval, ApprovalKind, ApprovalStatus, Channel, Vote, VoteDecision
from approvals.policy import plan_rule, policy_rules, result_from_client, tool_call_rule
from approvals.rules import Rule
from approvals.selectors import NOT_AN_APPROVER, vote_refusal
from approvals.transitions import approval_payload, approval_transition, approvals_transition
from common.compiled import CompiledGet
from common.prepared import prepared_cursor
from execution.engine.plan_flow import plan_changes_request, plan_decision_apply, plan_lock
from execution.engine.waits import subtask_decision_apply
from execution.events import event_append, events_batched
from execution.services import operation_require
from plans.models import Plan, Subtask
from plans.revisions import StaleRevision
from plans.selectors import can_approve

logger = logging.getLogger(__name__)

EXPIRE_BATCH = 200

# An approval's plan, locked (as select_for_update(of=("self",)) on a join): written out once, as the ORM
# took longer to compile it than PostgreSQL to run it on every decision. Names come from the models.
PLAN_OF_APPROVAL_LOCK_SQL = (
    f"SELECT p.id FROM {Plan._meta.db_table} p JOIN {Approval._meta.db_table} a ON a.plan_id = p.id "  # nosec B608
    "WHERE a.id = %s FOR UPDATE OF p"
)
# Then the approval, locked, with its subtask, plan and execution (compiled once: see common/compiled.py).
_WITH_SUBTASK_AND_EXECUTION = Approval.objects.select_related("subtask", "plan__execution")
APPROVAL_LOCKED = CompiledGet(_WITH_SUBTASK_AND_EXECUTION.select_for_update(of=("self",)))
# A tool call's approval in one statement instead: its plan, itself, its subtask and the plan's
# execution, all locked, the plan's row first (PostgreSQL locks in the order FOR UPDATE OF names
# them: the one lock order). Each row locked after a wait is read as it is now, so all four are
# current. No row: a plan's approval (no subtask), or none; read as above.
TOOL_CALL_APPROVAL_LOCKED = CompiledGet(
    _WITH_SUBTASK_AND_EXECUTION.filter(subtask__isnull=False, plan__execution__isnull=False).select_for_update(
        of=("plan", "self", "subtask", "plan__execution")
    )
)


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
    """Create a pending approval as the fitting rule says (the caller holds the plan's lock) and announce it.

    An "allow" or "deny" rule decides it at once (channel "policy"), which resumes the
    subtask or starts or cancels the plan, as any decision does; an "allow" waits for the
    result of a tool that only the client runs. A tool call that one person may decide
    and that a grant covers (approvals/grants.py) is approved at once (channel "grant").
    """
    if kind == ApprovalKind.PLAN:
        rule = plan_rule(plan)
    else:
        assert subtask is not None
        rule = tool_call_rule(plan_id=plan.pk, agent=subtask.agent, tool=tool, arguments=arguments or {})
    ttl = settings.APPROVALS_DEFAULT_TTL_S
    if rule is not None and rule.decision == "ask" and rule.expires_after_s is not None:
        ttl = rule.expires_after_s
    approval = Approval.objects.create(
        **({"pk": approval_id} if approval_id is not None else {}),
        plan=plan,
        subtask=subtask,
        kind=kind,
        tool=tool,
        arguments=arguments or {},
        call_index=call_index,
        expires_at=timezone.now() + timedelta(seconds=ttl) if ttl else None,
        **_asked(rule),
    )
    event_append(plan_id=plan.pk, type="approval.requested", payload=approval_payload(approval))
    if rule is None or rule.decision == "ask":
        _grant_apply(plan, approval)
        return approval
    if rule.decision == "allow" and subtask is not None and result_from_client(subtask, tool):
        return approval  # one approve by the owner or a decider, with the result, decides it
    approved = rule.decision == "allow"
    logger.info("Plan %s: %s approval %s %s by policy %r", plan.pk, kind, approval.pk, rule.decision, rule.name)
    _decide(
        plan,
        approval,
        status=ApprovalStatus.APPROVED if approved else ApprovalStatus.REJECTED,
        user=None,
        channel=Channel.POLICY,
        reason=f"allowed by policy {rule.name}" if approved else rule.reason,
    )
    return approval


def _grant_apply(plan: Plan, approval: Approval) -> None:
    """Approve a pending tool call at once (channel "grant") if a grant covers it and one person may decide it."""
    if approval.subtask is None or remember_problem(plan, approval, scope=""):
        return
    grant = grant_applying(plan, agent=approval.subtask.agent, tool=approval.tool)
    if grant is None:
        return
    by = grant.created_by.get_username() if grant.created_by is not None else "a deleted user"
    logger.info("Plan %s: tool call approval %s approved by grant %s", plan.pk, approval.pk, grant.pk)
    _decide(
        plan,
        approval,
        status=ApprovalStatus.APPROVED,
        user=None,
        channel=Channel.GRANT,
        reason=f"remembered for the {grant.scope} by {by}",
    )


def _asked(rule: Rule | None) -> dict[str, Any]:
    """Return the fields of an approval that say who decides it, from the rule that fits (None: the defaults)."""
    fields: dict[str, Any] = {"separate_requester": settings.APPROVALS_SEPARATE_REQUESTER}
    if rule is None:
        return fields
    fields["policy"] = {"rule": rule.name, "decision": rule.decision}
    if rule.decision == "ask":
        fields.update(
            approvers=list(rule.approvers) if rule.approvers is not None else None,
            quorum=rule.quorum,
            on_expiry=rule.on_expiry,
        )
        if rule.separate_requester is not None:
            fields["separate_requester"] = rule.separate_requester
    else:  # a rule's own decision: one person at most (a client tool's result), whatever the setting says
        fields["separate_requester"] = False
    return fields


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

    def plan_gated(self, *, plan: Plan) -> bool:
        rule = plan_rule(plan)
        return rule is not None and rule.decision != "allow"

    def tool_call_gated(self, *, plan_id: UUID | str, agent: str, tool: str, arguments: dict[str, Any]) -> bool:
        if not policy_rules():  # no file: nothing to look up, the common case on every call
            return False
        rule = tool_call_rule(plan_id=plan_id, agent=agent, tool=tool, arguments=arguments)
        return rule is not None and rule.decision != "allow"

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


def plan_approve(
    *, plan_id: UUID, user: User, expected_revisions: Collection[int] | None = None, channel: str = Channel.API
) -> Plan:
    """Approve a draft plan: vote on its pending plan approval (409 unless the plan is a draft).

    `expected_revisions` (If-Match): approve only a revision the approver read (else StaleRevision).
    """
    expired = None
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
            if not can_approve(user, plan):
                raise VoteRefused(NOT_AN_APPROVER)
            plan_decision_apply(plan=plan, approved=True, actor=user.get_username())
        else:
            approval.plan = plan
            expired = _vote(plan, approval, Ballot(user=user, status=ApprovalStatus.APPROVED, channel=channel))
    if expired is not None:
        raise AlreadyDecided(expired)
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
    remember: str | None = None,
    channel: str = Channel.API,
) -> Approval:
    """Record a vote once (a decision when a reject or at the quorum), then resume what waited (after commit).

    `decided_by` None is the system's own decision, no vote. `request_changes`: a plan
    approval rejected so keeps its plan a draft for its owner to revise
    (ChangesNotApplicable for anything else). `remember` ("plan" or "session", approving a
    tool call only): a grant approves the tool's later calls by the agent (approvals/grants.py).
    """
    if remember and not approve:
        raise VoteInvalid("remember", "Only an approving vote can remember a tool call.")
    if request_changes and approve:
        raise ChangesNotApplicable("Changes are requested by rejecting the plan approval, not by approving it.")
    return _decide_by_id(
        approval_id,
        status=ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED,
        user=decided_by,
        channel=channel,
        reason=reason,
        arguments=arguments,
        result=result,
        request_changes=request_changes,
        remember=remember,
    )


def approvals_expire_overdue() -> int:
    """Apply `on_expiry` to pending approvals past their expiry: a rejection with reason "expired", or an approval."""
    overdue = Approval.objects.filter(status=ApprovalStatus.PENDING, expires_at__lte=timezone.now()).values_list(
        "pk", flat=True
    )
    expired = 0
    for approval_id in list(overdue[:EXPIRE_BATCH]):
        with transaction.atomic():
            plan = Plan.objects.select_for_update(of=("self",)).get(approvals__id=approval_id)
            approval = Approval.objects.select_for_update(of=("self",)).select_related("subtask").get(pk=approval_id)
            approval.plan = plan
            if approval.status != ApprovalStatus.PENDING:
                continue
            _expire(plan, approval)
        expired += 1
        subject = "plan approval"
        if approval.subtask is not None:
            subject = f"tool call {approval.tool!r} of subtask {approval.subtask.key!r}"
        outcome = " and was approved (on_expiry)" if approval.status == ApprovalStatus.APPROVED else ""
        logger.info("Plan %s: its %s expired undecided%s", approval.plan_id, subject, outcome)
    return expired


def _expire(plan: Plan, approval: Approval) -> None:
    """Apply the approval's `on_expiry` (the caller holds the locks and read it pending)."""
    if approval.on_expiry == "approve":
        _decide(plan, approval, status=ApprovalStatus.APPROVED, user=None, channel=Channel.EXPIRY, reason="expired")
    else:
        _decide(plan, approval, status=ApprovalStatus.EXPIRED, user=None, channel=Channel.EXPIRY, reason="expired")


def _decide_by_id(approval_id: UUID, *, user: User | None, **decision: Any) -> Approval:
    expired = None
    with transaction.atomic():
        approval = _approval_locked(approval_id)
        plan = approval.plan
        # A tool call's vote and decision write their events in one statement (a plan approval's
        # start may read the plan's counters, so those are written as they come).
        batched = events_batched(plan_id=plan.pk) if approval.kind == ApprovalKind.TOOL_CALL else nullcontext()
        with batched:
            if user is None:
                decision.pop("remember", None)  # the system remembers nothing
                _decide(plan, approval, user=None, **decision)
            else:
                expired = _vote(plan, approval, Ballot(user=user, **decision))
    if expired is not None:  # committed: the expiry stands, the vote came too late
        raise AlreadyDecided(expired)
    return approval


def _approval_locked(approval_id: UUID) -> Approval:
    """Lock an approval's plan, then the approval, and return it read after the locks with its subtask and execution."""
    try:
        return TOOL_CALL_APPROVAL_LOCKED.get(approval_id)
    except Approval.DoesNotExist:
        pass
    # The plan first (the one lock order), found through the approval; then, under its lock, the
    # approval with its subtask, plan and execution in one statement: rows read after the lock are current.
    with prepared_cursor(connection) as cursor:
        cursor.execute(PLAN_OF_APPROVAL_LOCK_SQL, [approval_id])
        if cursor.fetchone() is None:
            raise ApprovalNotFound()
    return APPROVAL_LOCKED.get(approval_id)


@dataclass(frozen=True)
class Ballot:
    """One person's vote as it was cast: approve or reject (`status`), and what came with it."""

    user: User
    status: str
    channel: str = Channel.API
    reason: str = ""
    arguments: dict[str, Any] | None = None
    result: Any = None
    request_changes: bool = False
    remember: str | None = None

    @property
    def approves(self) -> bool:
        return self.status == ApprovalStatus.APPROVED


def _vote(plan: Plan, approval: Approval, ballot: Ballot) -> Approval | None:
    """Record one person's vote (the caller holds the plan's and the approval's locks); decide when it settles it.

    A reject decides at once; approves decide when the distinct approving voters reach the
    quorum. Return the approval when it was overdue: its `on_expiry` was applied instead,
    and the caller raises AlreadyDecided once that is committed. Refused (vote_check) before
    anything is written.
    """
    vote_check(plan, approval, ballot)
    return vote_record(plan, approval, ballot)


def vote_check(plan: Plan, approval: Approval, ballot: Ballot) -> None:
    """Raise why the vote is refused (AlreadyDecided, VoteRefused, VoteInvalid, AlreadyVoted, ...), reading only.

    An overdue approval passes: vote_record applies its `on_expiry` instead of the vote.
    """
    if approval.status != ApprovalStatus.PENDING:
        raise AlreadyDecided(approval)
    refusal = vote_refusal(ballot.user, approval)
    if refusal:  # before the expiry: only someone who may vote on it makes an overdue approval expire
        raise VoteRefused(refusal)
    if _overdue(approval):
        return
    if ballot.request_changes and approval.kind != ApprovalKind.PLAN:
        raise ChangesNotApplicable("Only a plan approval can ask for changes; reject a tool call with a reason.")
    if ballot.approves and approval.quorum > 1 and ballot.arguments is not None:
        raise VoteInvalid(
            "arguments", f"A vote may not edit the arguments when {approval.quorum} approvers must agree."
        )
    problem = remember_problem(plan, approval, ballot.remember) if ballot.remember else ""
    if problem:
        raise VoteInvalid("remember", problem)
    # At a quorum of one any earlier vote decided the approval, so a pending one has none.
    if approval.quorum > 1 and Vote.objects.filter(approval=approval, user=ballot.user).exists():
        raise AlreadyVoted()


def _overdue(approval: Approval) -> bool:
    return approval.expires_at is not None and approval.expires_at <= timezone.now()


def vote_record(plan: Plan, approval: Approval, ballot: Ballot, *, votes: list[Vote] | None = None) -> Approval | None:
    """Record a vote vote_check let through (see _vote); return the approval if it was overdue and expired instead.

    `votes`: at a quorum of one (where nothing reads the vote back), the Vote goes there for
    the caller to write with others in one statement before its transaction ends.
    """
    if _overdue(approval):
        _expire(plan, approval)
        return approval
    user = ballot.user
    vote = Vote(
        approval=approval,
        user=user,
        decision=VoteDecision.APPROVE if ballot.approves else VoteDecision.REJECT,
        reason=ballot.reason,
        channel=ballot.channel,
    )
    deciding: list[Vote] = []  # at a quorum of one the vote decides: it is written with the decision
    if approval.quorum == 1:
        (votes if votes is not None else deciding).append(vote)
        _votes_known(approval, [vote])
    else:
        vote.save(force_insert=True)
    approvals = _voted(plan, approval, user=user, approved=ballot.approves)
    if ballot.approves and approvals < approval.quorum:
        logger.info("Plan %s: approval %s has %d of %d approvals", plan.pk, approval.pk, approvals, approval.quorum)
        return None
    _decide(
        plan,
        approval,
        status=ballot.status,
        user=user,
        channel=ballot.channel,
        reason=ballot.reason,
        arguments=ballot.arguments,
        result=ballot.result,
        request_changes=ballot.request_changes,
        votes=deciding,
    )
    if ballot.remember and approval.status == ApprovalStatus.APPROVED:
        grant_make(plan, approval, scope=ballot.remember, user=user)
    return None


def _votes_known(approval: Approval, votes: list[Vote]) -> None:
    """Give the approval its votes as prefetch_related does, so that showing it reads none.

    At a quorum of one the vote just cast is the approval's only one (an earlier one would have decided it).
    """
    known = approval.votes.all()
    known._result_cache = votes
    known._prefetch_done = True  # type: ignore[attr-defined]
    approval._prefetched_objects_cache = {  # type: ignore[attr-defined]
        **getattr(approval, "_prefetched_objects_cache", {}),
        "votes": known,
    }


def _voted(plan: Plan, approval: Approval, *, user: User, approved: bool) -> int:
    """Announce a vote (approval.voted); return how many distinct voters approve so far."""
    if approval.quorum == 1:  # an earlier approving vote would have decided it: this one is the only one
        approvals = int(approved)
    else:
        approvals = Vote.objects.filter(approval=approval, decision=VoteDecision.APPROVE).count()
    event_append(
        plan_id=plan.pk,
        type="approval.voted",
        payload={
            "approval_id": approval.pk,
            "user": user.get_username(),
            "decision": VoteDecision.APPROVE if approved else VoteDecision.REJECT,
            "approvals": approvals,
            "quorum": approval.quorum,
        },
    )
    return approvals


def _decide(
    plan: Plan,
    approval: Approval,
    *,
    status: str,
    user: User | None,
    channel: str,
    reason: str = "",
    arguments: dict[str, Any] | None = None,
    result: Any = None,
    request_changes: bool = False,
    votes: Sequence[Vote] = (),
) -> None:
    """Record the decision (the caller holds the plan's and the approval's locks) and act on it.

    `votes`: the vote that decides it, not yet written: it is inserted with the decision.
    """
    actor = "system"
    if user is not None:
        actor = user.get_username()
    elif channel in (Channel.POLICY, Channel.GRANT):
        actor = channel
    approved = status == ApprovalStatus.APPROVED
    if request_changes and approval.kind != ApprovalKind.PLAN:
        raise ChangesNotApplicable("Only a plan approval can ask for changes; reject a tool call with a reason.")
    if user is not None:  # the system's own decisions (policy, expiry) log lines of their own
        logger.info("Plan %s: %s approval %s %s by %s", plan.pk, approval.kind, approval.pk, status, actor)
    decision: dict[str, Any] = {"decided_by": user, "reason": reason, "channel": channel, "votes": votes}
    if approval.kind == ApprovalKind.PLAN:
        approval_transition(approval=approval, to=status, **decision)
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
            edited_arguments=arguments if approved else None,
            result=result if approved else None,
            **decision,
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
