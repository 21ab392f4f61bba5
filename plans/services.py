"""Writing plans: persist a validated PlanSpec with its subtasks and dependency edges, and each revision of a draft."""

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from common.errors import DomainError
from plans.models import Plan, PlanRevision, PlanStatus, Subtask, SubtaskDependency
from plans.revisions import spec_content
from plans.shape import Limits
from plans.validation import PlanSpec

BULK_BATCH_SIZE = 2000
# A plan in one of these statuses is done with; every other status counts against its owner's quota.
PLAN_TERMINAL = (PlanStatus.COMPLETED, PlanStatus.FAILED, PlanStatus.CANCELLED)


class TooManyActivePlans(DomainError):
    """The owner already has as many active plans as PLANS_MAX_ACTIVE_PER_USER allows."""

    code = "too_many_active_plans"
    http_status = 409


def plan_limits() -> Limits:
    """Return the plan size limits configured in settings."""
    return Limits(
        max_subtasks=settings.PLANS_MAX_SUBTASKS,
        max_goal_length=settings.PLANS_MAX_GOAL_LENGTH,
        max_description_length=settings.PLANS_MAX_DESCRIPTION_LENGTH,
        max_timeout_s=settings.EXECUTION_MAX_TIMEOUT_S,
        max_dependencies=settings.PLANS_MAX_DEPENDENCIES,
    )


def active_plans_quota_hold(*, owner: User) -> None:
    """Lock the owner's row and raise TooManyActivePlans if another plan would exceed their quota.

    Called inside the transaction that stores the plan: two submissions of one owner take the
    lock in turn, so the second counts the first's plan and both cannot pass at the limit.
    """
    limit = settings.PLANS_MAX_ACTIVE_PER_USER
    if limit <= 0:
        return
    User.objects.select_for_update().only("pk").get(pk=owner.pk)
    active = Plan.objects.filter(owner=owner).exclude(status__in=PLAN_TERMINAL).count()
    if active >= limit:
        raise TooManyActivePlans(
            f"You have {active} active plans, the most allowed (PLANS_MAX_ACTIVE_PER_USER = {limit}): "
            "wait for some to finish, or cancel some, before submitting another.",
            details={"limit": limit, "active": active},
        )


@transaction.atomic
def plan_create(*, owner: User, spec: PlanSpec) -> Plan:
    """Store a draft plan, its subtasks (with their batch) and their dependencies, as its revision 1."""
    plan = Plan.objects.create(
        owner=owner,
        goal=spec.goal,
        session_id=spec.session_id,
        max_parallel=spec.max_parallel,
        failure_policy=spec.failure_policy,
        requires_approval=spec.requires_approval,
        auto_execute=spec.auto_execute,
        metadata=spec.metadata,
        callback_url=spec.callback_url,
        subtask_count=len(spec.subtasks),
        pending_count=len(spec.subtasks),
    )
    _subtasks_store(plan, spec)
    PlanRevision.objects.create(plan=plan, revision=1, author=owner, content=spec_content(spec))
    return plan


def plan_content(plan: Plan) -> dict[str, Any]:
    """Return the content of the plan's current revision: the submission it runs as."""
    content: dict[str, Any] = PlanRevision.objects.values_list("content", flat=True).get(
        plan=plan, revision=plan.revision
    )
    return content


def plan_revision_store(*, plan: Plan, spec: PlanSpec, author: User, diff: Mapping[str, Any]) -> PlanRevision:
    """Make a revised spec the draft's next revision: its fields and subtasks replaced, the revision recorded.

    The caller holds the plan's lock and has checked it is a draft: its subtasks never ran,
    so they are replaced whole (a key kept keeps its subtask's id), with new batches.
    """
    kept = dict(Subtask.objects.filter(plan=plan).values_list("key", "pk"))
    _subtasks_delete(plan)
    fields = {
        "goal": spec.goal,
        "max_parallel": spec.max_parallel,
        "failure_policy": spec.failure_policy,
        "metadata": spec.metadata,
        "subtask_count": len(spec.subtasks),
        "pending_count": len(spec.subtasks),
        "revision": plan.revision + 1,
        "updated_at": timezone.now(),
    }
    Plan.objects.filter(pk=plan.pk).update(**fields)
    for name, value in fields.items():
        setattr(plan, name, value)
    _subtasks_store(plan, spec, ids=kept)
    return PlanRevision.objects.create(
        plan=plan,
        revision=plan.revision,
        author=author,
        content=spec_content(spec),
        diff={"revision": plan.revision, **diff},
    )


def revision_changes_request(*, plan: Plan, reason: str, requested_by: str, approval_id: UUID) -> PlanRevision:
    """Note on the plan's current revision that a person sent it back asking for changes (under the plan's lock)."""
    revision = PlanRevision.objects.select_for_update().get(plan=plan, revision=plan.revision)
    revision.change_requests = [
        *revision.change_requests,
        {
            "reason": reason,
            "requested_by": requested_by,
            "requested_at": timezone.now(),
            "approval_id": approval_id,
        },
    ]
    revision.save(update_fields=["change_requests"])
    return revision


def _subtasks_delete(plan: Plan) -> None:
    """Delete a draft's subtasks and their edges, a statement each.

    Nothing else refers to the subtasks of a draft (they never ran: no approval, no tool call),
    so Django's collector, which reads every subtask to look for what refers to it, is skipped.
    """
    SubtaskDependency.objects.filter(subtask__plan=plan).delete()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM plans_subtask WHERE plan_id = %s", [plan.pk])


def _subtasks_store(plan: Plan, spec: PlanSpec, *, ids: Mapping[str, UUID] | None = None) -> None:
    """Store the spec's subtasks (with their batch) and dependencies; `ids` gives some keys the id they had."""
    ids = ids or {}
    batch_of = {key: index for index, batch in enumerate(spec.batches) for key in batch}
    subtasks = Subtask.objects.bulk_create(
        [
            Subtask(
                **({"pk": ids[item.key]} if item.key in ids else {}),
                plan=plan,
                key=item.key,
                description=item.description,
                agent=item.agent,
                input=item.input,
                max_retries=item.max_retries,
                timeout_s=item.timeout_s,
                position=position,
                batch_index=batch_of[item.key],
            )
            for position, item in enumerate(spec.subtasks)
        ],
        batch_size=BULK_BATCH_SIZE,
    )
    by_key = {subtask.key: subtask for subtask in subtasks}
    SubtaskDependency.objects.bulk_create(
        [
            SubtaskDependency(subtask=by_key[item.key], depends_on=by_key[dep])
            for item in spec.subtasks
            for dep in item.depends_on
        ],
        batch_size=BULK_BATCH_SIZE * 5,
    )
