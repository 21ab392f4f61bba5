"""Progress of a plan: its subtask counters, read in one query whatever the plan's size."""

from typing import Any
from uuid import UUID

from django.db import connection
from django.db.models import Count, Q

from execution.states import SUBTASK_UNSETTLED
from plans.models import Plan, Subtask
from plans.models import SubtaskStatus as S

COUNTERS = [f"{status}_count" for status in S.values]


def progress_of(counts: dict[str, int], total: int) -> dict[str, Any]:
    """Return the API's progress object from per-status counts: queued counts as pending."""
    done = counts.get(S.DONE, 0)
    return {
        "total": total,
        "done": done,
        "failed": counts.get(S.FAILED, 0),
        "running": counts.get(S.RUNNING, 0),
        "pending": counts.get(S.PENDING, 0) + counts.get(S.QUEUED, 0),
        "waiting_approval": counts.get(S.WAITING_APPROVAL, 0),
        "skipped": counts.get(S.SKIPPED, 0),
        "cancelled": counts.get(S.CANCELLED, 0),
        # Rounded half up, as PostgreSQL rounds the percentage of progress events (execution/events.py).
        "percentage": (2000 * done + total) // (2 * total) / 10 if total else 0.0,
    }


def plan_progress(*, plan_id: UUID) -> dict[str, Any]:
    """Return counts per status (queued counts as pending) and the percentage done."""
    row = Plan.objects.filter(pk=plan_id).values("subtask_count", *COUNTERS).get()
    return progress_of({status: row[f"{status}_count"] for status in S.values}, row["subtask_count"])


def current_subtask_keys(*, plan_id: UUID) -> list[str]:
    """Return the keys of the subtasks in flight (queued, running, waiting for approval)."""
    return list(
        Subtask.objects.filter(plan_id=plan_id, status__in=SUBTASK_UNSETTLED - {S.PENDING})
        .order_by("batch_index", "position")
        .values_list("key", flat=True)
    )


def plan_recount(*, plan_id: UUID) -> None:
    """Set a plan's counters from its subtasks (plans stored before counters, or repaired by hand)."""
    counts = Subtask.objects.filter(plan_id=plan_id).aggregate(
        total=Count("pk"), **{f"{status}_count": Count("pk", filter=Q(status=status)) for status in S.values}
    )
    Plan.objects.filter(pk=plan_id).update(subtask_count=counts.pop("total"), **counts)


def counters_match(*, plan_id: UUID) -> bool:
    """Return whether a plan's counters agree with its subtasks (a check for tests and operators)."""
    columns = ", ".join(f"p.{name}" for name in COUNTERS)
    counted = ", ".join(f"count(*) FILTER (WHERE s.status = '{status}')" for status in S.values)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT ROW(p.subtask_count, {columns}) = ROW(count(s.id), {counted}) "  # nosec
            "FROM plans_plan p LEFT JOIN plans_subtask s ON s.plan_id = p.id WHERE p.id = %s GROUP BY p.id",
            [plan_id],
        )
        return bool(cursor.fetchone()[0])
