"""Property, with real workers: drawn plans run to the end, dependencies first, within max_parallel, or are refused."""

from datetime import datetime

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from execution.services import plan_submit
from plans.models import Plan, PlanStatus, Subtask
from plans.validation import PlanInvalid
from tests.support.dags import Drawn, expected_error, plans
from tests.support.factories import UserFactory
from tests.support.flows import finished
from tests.support.invariants import assert_invariants

pytestmark = pytest.mark.usefixtures("engine")


def napping(draw) -> dict:
    """Each subtask naps a little (so runs can overlap), then finishes with the keys of its dependencies."""
    return {
        "callable": "tests.support.agents.dependency_keys_after_a_nap",
        "sleep_ms": draw(st.sampled_from([0, 50, 200])),
    }


def interval(subtask: Subtask) -> tuple[datetime, datetime]:
    """Return when the subtask's run started and ended."""
    assert subtask.started_at is not None
    assert subtask.completed_at is not None
    return subtask.started_at, subtask.completed_at


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """Return how many of these (start, end) intervals overlap at the busiest moment."""
    moments = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    busiest = running = 0
    # At equal times an end sorts before a start (-1 < 1): a run that ends as another starts does not overlap it.
    for _, change in moments:
        running += change
        busiest = max(busiest, running)
    return busiest


@settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(drawn=plans(max_size=8, agent="python", input_of=napping))
def test_a_drawn_plan_runs_to_completion_in_dependency_order_within_max_parallel_or_is_refused(drawn: Drawn):
    expected = expected_error(drawn)
    event(expected or "valid")
    data = drawn.data(requires_approval=False)
    if expected:
        before = Plan.objects.count()
        with pytest.raises(PlanInvalid) as refused:
            plan_submit(owner=UserFactory(), data=data)
        assert refused.value.code == expected
        assert Plan.objects.count() == before
        return

    plan = finished(plan_submit(owner=UserFactory(), data=data), timeout=90)
    assert_invariants(plan)
    assert plan.status == PlanStatus.COMPLETED
    subtasks = {each.key: each for each in plan.subtasks.all()}
    ran = {key: interval(each) for key, each in subtasks.items()}
    for key, deps in drawn.deps.items():
        assert subtasks[key].attempts == 1
        # Each subtask saw exactly its dependencies' results, all finished before it started.
        assert subtasks[key].result == sorted(deps)
        assert all(ran[dep][1] <= ran[key][0] for dep in deps)
    assert most_at_once(list(ran.values())) <= drawn.max_parallel
