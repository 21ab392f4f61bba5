"""Writing plans: persist a validated PlanSpec with its subtasks and dependency edges."""

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from plans.models import Plan, Subtask, SubtaskDependency
from plans.shape import Limits
from plans.validation import PlanSpec

BULK_BATCH_SIZE = 2000


def plan_limits() -> Limits:
    """Return the plan size limits configured in settings."""
    return Limits(
        max_subtasks=settings.PLANS_MAX_SUBTASKS,
        max_goal_length=settings.PLANS_MAX_GOAL_LENGTH,
        max_description_length=settings.PLANS_MAX_DESCRIPTION_LENGTH,
        max_timeout_s=settings.EXECUTION_MAX_TIMEOUT_S,
    )


@transaction.atomic
def plan_create(*, owner: User, spec: PlanSpec) -> Plan:
    """Store a draft plan, its subtasks (with their batch) and their dependencies."""
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
    batch_of = {key: index for index, batch in enumerate(spec.batches) for key in batch}
    subtasks = Subtask.objects.bulk_create(
        [
            Subtask(
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
    return plan
