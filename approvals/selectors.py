"""Who may see, vote on and decide which approvals, and which plans their approvers see."""

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Q, QuerySet

from approvals.models import Approval, ApprovalStatus
from plans.models import Plan
from plans.selectors import is_approver, plans_visible_to

NOT_AN_APPROVER = "not_an_approver"
REQUESTER_CANNOT_APPROVE = "requester_cannot_approve"


def _designating(user: User) -> Q:
    """Return the approvals whose rule names the user, or one of the user's groups, among the approvers."""
    names = [f"user:{user.get_username()}", *(f"group:{name}" for name in user.groups.values_list("name", flat=True))]
    condition = Q(pk__in=[])
    for name in names:
        condition |= Q(approvers__contains=[name])
    return condition


def approvals_visible_to(user: User | AnonymousUser) -> QuerySet[Approval]:
    """Return the approvals a user may see: their own plans', those naming them as approvers, or all for deciders."""
    if not user.is_authenticated:
        return Approval.objects.none()
    if is_approver(user):
        return Approval.objects.all()
    assert isinstance(user, User)
    return Approval.objects.filter(Q(plan__owner=user) | _designating(user))


def plans_visible_to_voters(user: User | AnonymousUser) -> QuerySet[Plan]:
    """Return the plans a user may see: plans_visible_to's, and the plans of the approvals naming them (read-only)."""
    visible = plans_visible_to(user)
    if not user.is_authenticated or is_approver(user):
        return visible
    assert isinstance(user, User)
    return Plan.objects.filter(Q(owner=user) | Q(pk__in=Approval.objects.filter(_designating(user)).values("plan_id")))


def approvals_awaiting(user: User, approvals: QuerySet[Approval] | None = None) -> QuerySet[Approval]:
    """Return the pending approvals (of `approvals`, else all) the user may still vote on: vote_refusal's rules in SQL.

    The conditions go on `approvals` itself, not through a subquery of ids, so the database
    starts from the pending approvals whatever the other filters are.
    """
    by_default = Q(approvers__isnull=True) & (Q() if is_approver(user) else Q(plan__owner=user))
    return (
        (Approval.objects.all() if approvals is None else approvals)
        .filter(status=ApprovalStatus.PENDING)
        .filter(by_default | _designating(user))
        .exclude(separate_requester=True, plan__owner=user)
        .exclude(votes__user=user)
    )


def is_named_approver(user: User, approvers: list[str]) -> bool:
    """Return whether `approvers` names the user or one of the user's groups."""
    if f"user:{user.get_username()}" in approvers:
        return True
    groups = {entry.removeprefix("group:") for entry in approvers if entry.startswith("group:")}
    return bool(groups) and user.groups.filter(name__in=groups).exists()


def vote_refusal(user: User, approval: Approval) -> str:
    """Return why the user may not vote on the approval (a details.reason), or "" when they may."""
    is_owner = approval.plan.owner_id == user.pk
    if approval.separate_requester and is_owner:
        return REQUESTER_CANNOT_APPROVE
    if approval.approvers is None:  # the default: the plan's owner and the deciders
        may_vote = is_owner or is_approver(user)
    else:
        may_vote = is_named_approver(user, approval.approvers)
    return "" if may_vote and user.is_active else NOT_AN_APPROVER


def can_decide(user: User | AnonymousUser, approval: Approval) -> bool:
    """Return whether the user may vote on this approval (by default its plan's owner or a decider)."""
    return bool(user.is_authenticated and isinstance(user, User) and not vote_refusal(user, approval))
