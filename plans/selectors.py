"""Who may see and act on which plans, and reading a plan's subtasks and revisions."""

from uuid import UUID

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import QuerySet

from plans.models import Plan, PlanRevision, Subtask, SubtaskDependency

# Approvers (staff with this permission) see every plan, to decide on its approvals.
DECIDE_PERMISSION = "approvals.decide_approval"


def is_approver(user: User | AnonymousUser) -> bool:
    """Return whether the user may decide any approval (staff with the permission, or superuser)."""
    return bool(user.is_active and user.is_staff and user.has_perm(DECIDE_PERMISSION))


def plans_visible_to(user: User | AnonymousUser) -> QuerySet[Plan]:
    """Return the plans a user may see: their own, or all of them for approvers."""
    if not user.is_authenticated:
        return Plan.objects.none()
    if is_approver(user):
        return Plan.objects.all()
    return Plan.objects.filter(owner=user)


def can_operate(user: User | AnonymousUser, plan: Plan) -> bool:
    """Return whether the user may execute, pause, resume, cancel or retry the plan (its owner, or a superuser)."""
    return bool(user.is_authenticated and (plan.owner_id == user.pk or user.is_superuser))


def can_approve(user: User | AnonymousUser, plan: Plan) -> bool:
    """Return whether the user may approve the plan: its owner, or an approver (it decides its plan approval)."""
    return bool(user.is_authenticated and (plan.owner_id == user.pk or is_approver(user)))


def plan_subtasks(
    plan: Plan, *, offset: int = 0, limit: int | None = None
) -> tuple[list[Subtask], dict[UUID, list[str]]]:
    """Return a plan's subtasks in run order (`limit` of them from `offset`) and each one's dependency keys.

    Two queries; the second reads the edges of the subtasks returned only, so a page of a huge
    plan costs about what a small plan does.
    """
    ordered = plan.subtasks.order_by("batch_index", "position")
    subtasks = list(ordered[offset : offset + limit] if limit is not None else ordered[offset:])
    edges = SubtaskDependency.objects.filter(subtask_id__in=[subtask.pk for subtask in subtasks])
    depends_on: dict[UUID, list[str]] = {}
    for subtask_id, key in edges.order_by("pk").values_list("subtask_id", "depends_on__key"):
        depends_on.setdefault(subtask_id, []).append(key)
    return subtasks, depends_on


def plan_revisions(plan: Plan) -> QuerySet[PlanRevision]:
    """Return a plan's revisions, oldest first, with their authors."""
    return PlanRevision.objects.filter(plan=plan).select_related("author").order_by("revision")
