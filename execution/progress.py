"""Progress of a plan, derived from its subtasks with a constant number of queries."""

from typing import Any
from uuid import UUID

from django.db.models import Count, Q

from plans.models import Subtask
from plans.models import SubtaskStatus as S

IN_FLIGHT = [S.QUEUED, S.RUNNING, S.WAITING_APPROVAL]


def plan_progress(*, plan_id: UUID) -> dict[str, Any]:
    """Return counts per status (queued counts as pending) and the percentage done."""
    counts = Subtask.objects.filter(plan_id=plan_id).aggregate(
        total=Count("pk"),
        done=Count("pk", filter=Q(status=S.DONE)),
        failed=Count("pk", filter=Q(status=S.FAILED)),
        running=Count("pk", filter=Q(status=S.RUNNING)),
        pending=Count("pk", filter=Q(status__in=[S.PENDING, S.QUEUED])),
        waiting_approval=Count("pk", filter=Q(status=S.WAITING_APPROVAL)),
        skipped=Count("pk", filter=Q(status=S.SKIPPED)),
        cancelled=Count("pk", filter=Q(status=S.CANCELLED)),
    )
    total = counts["total"]
    counts["percentage"] = round(100 * counts["done"] / total, 1) if total else 0.0
    return counts


def current_subtask_keys(*, plan_id: UUID) -> list[str]:
    """Return the keys of the subtasks in flight (queued, running, waiting for approval)."""
    return list(
        Subtask.objects.filter(plan_id=plan_id, status__in=IN_FLIGHT)
        .order_by("batch_index", "position")
        .values_list("key", flat=True)
    )
