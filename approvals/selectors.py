"""Who may see and decide which approvals."""

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import QuerySet

from approvals.models import Approval
from plans.selectors import is_approver


def approvals_visible_to(user: User | AnonymousUser) -> QuerySet[Approval]:
    """Return the approvals a user may see: those of their own plans, or all for approvers."""
    if not user.is_authenticated:
        return Approval.objects.none()
    if is_approver(user):
        return Approval.objects.all()
    return Approval.objects.filter(plan__owner=user)


def can_decide(user: User | AnonymousUser, approval: Approval) -> bool:
    """Return whether the user may decide this approval: the plan's owner, or an approver."""
    return bool(user.is_authenticated and (approval.plan.owner_id == user.pk or is_approver(user)))
