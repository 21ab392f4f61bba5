"""What must hold after any scenario, faults and load included: one helper every flow, fault and load test calls.

assert_invariants(plan, ...)    # waits for the plans to settle, then checks each rule
"""

from collections import Counter, defaultdict
from collections.abc import Iterable

from django.db import connection

from execution.events import COUNTERS
from execution.models import Event, StateTransition
from execution.states import EXECUTION_TRANSITIONS, PLAN_FINISHED, PLAN_TRANSITIONS, SUBTASK_TRANSITIONS, allowed
from plans.models import Plan, PlanStatus, Subtask, SubtaskDependency, SubtaskStatus
from tests.support.flows import wait_for

SETTLED_PLAN = (*PLAN_FINISHED,)


def plans_settled(plan_ids: list, *, timeout: float) -> None:
    """Wait until every plan has finished or waits only for people (nothing queued or running)."""

    def settled() -> bool:
        unfinished = Plan.objects.filter(pk__in=plan_ids).exclude(status__in=SETTLED_PLAN)
        return (
            not Subtask.objects.filter(
                plan__in=unfinished, status__in=[SubtaskStatus.PENDING, SubtaskStatus.QUEUED, SubtaskStatus.RUNNING]
            ).exists()
            and not unfinished.exclude(subtasks__status=SubtaskStatus.WAITING_APPROVAL).exists()
        )

    wait_for(settled, timeout=timeout, interval=0.2, message=f"{len(plan_ids)} plan(s) to settle")


def assert_invariants(plans: Plan | Iterable[Plan], *, timeout: float = 60) -> None:
    """Check every rule on these plans once they have settled (see plans_settled)."""
    plan_ids = [plans.pk] if isinstance(plans, Plan) else [plan.pk for plan in plans]
    plans_settled(plan_ids, timeout=timeout)
    for plan_id in plan_ids:
        problems = [
            *_events_contiguous(plan_id),
            *_transitions_legal(plan_id),
            *_dependencies_first(plan_id),
            *_attempts_increase(plan_id),
            *_completed_once(plan_id),
            *_nothing_left_in_flight(plan_id),
        ]
        if not counters_match(plan_id=plan_id):
            problems.append("its subtask counters disagree with its subtasks")
        assert not problems, f"plan {plan_id}: " + "; ".join(problems)


def counters_match(*, plan_id) -> bool:
    """Return whether a plan's counters agree with its subtasks."""
    columns = ", ".join(f"p.{name}" for name in COUNTERS)
    counted = ", ".join(f"count(*) FILTER (WHERE s.status = '{status}')" for status in SubtaskStatus.values)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT ROW(p.subtask_count, {columns}) = ROW(count(s.id), {counted}) "
            "FROM plans_plan p LEFT JOIN plans_subtask s ON s.plan_id = p.id WHERE p.id = %s GROUP BY p.id",
            [plan_id],
        )
        return bool(cursor.fetchone()[0])


def _events_contiguous(plan_id) -> list[str]:
    seqs = list(Event.objects.filter(plan_id=plan_id).order_by("seq").values_list("seq", flat=True))
    last = Plan.objects.values_list("last_event_seq", flat=True).get(pk=plan_id)
    if seqs != list(range(1, last + 1)):
        return [f"event numbers are not 1..{last} without gaps"]
    return []


def _transitions_legal(plan_id) -> list[str]:
    problems = []
    for before, after in StateTransition.objects.filter(execution__plan_id=plan_id).values_list(
        "from_state", "to_state"
    ):
        if not allowed(EXECUTION_TRANSITIONS, before, after):
            problems.append(f"execution went {before} -> {after}")
    for kind, payload in Event.objects.filter(plan_id=plan_id).values_list("type", "payload"):
        if kind.startswith("subtask.") and "previous_status" in payload:
            table, before, after = SUBTASK_TRANSITIONS, payload["previous_status"], payload["status"]
        elif kind.startswith("plan.") and "previous_status" in payload:
            table, before, after = PLAN_TRANSITIONS, payload["previous_status"], payload["status"]
        else:
            continue
        if not allowed(table, before, after):
            problems.append(f"{kind}: {before} -> {after} is not in the table")
    return problems


def _dependencies_first(plan_id) -> list[str]:
    problems = []
    finished_at = dict(Subtask.objects.filter(plan_id=plan_id).values_list("pk", "completed_at"))
    for key, started, dependency in SubtaskDependency.objects.filter(
        subtask__plan_id=plan_id, subtask__started_at__isnull=False
    ).values_list("subtask__key", "subtask__started_at", "depends_on_id"):
        done = finished_at.get(dependency)
        if done is None or (started is not None and started < done):
            problems.append(f"{key!r} started before a dependency finished")
    return problems


def _attempts_increase(plan_id) -> list[str]:
    seen: dict[str, int] = defaultdict(int)
    problems = []
    for payload in (
        Event.objects.filter(plan_id=plan_id, type__startswith="subtask.")
        .order_by("seq")
        .values_list("payload", flat=True)
    ):
        key, attempt = payload.get("subtask_key"), payload.get("attempt")
        if key is None or attempt is None:
            continue
        if attempt < seen[key]:
            problems.append(f"{key!r} went back from attempt {seen[key]} to {attempt}")
        seen[key] = max(seen[key], attempt)
    return problems


def _completed_once(plan_id) -> list[str]:
    completed = Counter(
        Event.objects.filter(plan_id=plan_id, type="subtask.completed").values_list("payload__subtask_key", flat=True)
    )
    twice = sorted(key for key, count in completed.items() if count > 1)
    done = set(Subtask.objects.filter(plan_id=plan_id, status=SubtaskStatus.DONE).values_list("key", flat=True))
    problems = [f"{key!r} completed {completed[key]} times" for key in twice]
    if missing := sorted(done - set(completed)):
        problems.append(f"{missing} are done without a subtask.completed event")
    return problems


def _nothing_left_in_flight(plan_id) -> list[str]:
    plan = Plan.objects.get(pk=plan_id)
    if plan.status not in PLAN_FINISHED and plan.status != PlanStatus.IN_PROGRESS:
        return []
    stuck = Subtask.objects.filter(plan_id=plan_id, status__in=[SubtaskStatus.QUEUED, SubtaskStatus.RUNNING])
    if plan.status in PLAN_FINISHED and stuck.exists():
        return [f"the plan is {plan.status} but {list(stuck.values_list('key', flat=True))} are still in flight"]
    return []


def reconciler_redrove(plan_ids: list) -> int:
    """Return how many subtask.resent events these plans have (the reconciler re-sent a lost message)."""
    return Event.objects.filter(plan_id__in=plan_ids, type="subtask.resent").count()
