"""Dispatch: one chord per dependency batch, in order, with real workers."""

import pytest
from celery.result import AsyncResult
from django.conf import settings

from config.results import is_database_backend
from execution.models import Event
from execution.services import plan_submit
from plans.models import Plan, PlanStatus, SubtaskStatus
from tests.support.factories import UserFactory, plan_data, subtask
from tests.support.flows import start, wait_for
from tests.support.invariants import assert_invariants

pytestmark = pytest.mark.usefixtures("engine")


def run_plan(*subtasks, timeout=60, **fields):
    plan = plan_submit(owner=UserFactory(), data=plan_data(*subtasks, requires_approval=False, **fields))
    wait_for(
        lambda: plan.__class__.objects.get(pk=plan.pk).status in ("completed", "failed", "cancelled"), timeout=timeout
    )
    plan.refresh_from_db()
    return plan


def assert_batches_ran_in_order(plan):
    subtasks = list(plan.subtasks.all())
    for later in subtasks:
        for earlier in subtasks:
            if earlier.batch_index < later.batch_index:
                assert earlier.completed_at <= later.started_at, (earlier.key, later.key)


def test_diamond_dag_completes_batch_by_batch():
    plan = run_plan(
        subtask("a", input={"sleep_ms": 100, "result": "A"}),
        subtask("b", "a", input={"sleep_ms": 200}),
        subtask("c", "a", input={"sleep_ms": 50}),
        subtask("d", "b", "c", input={"echo": True}),
    )
    assert plan.status == PlanStatus.COMPLETED
    assert plan.execution.state == "completed"
    assert list(plan.subtasks.values_list("batch_index", flat=True).order_by("position")) == [0, 1, 1, 2]
    assert set(plan.subtasks.values_list("status", flat=True)) == {SubtaskStatus.DONE}
    assert_batches_ran_in_order(plan)
    context = plan.subtasks.get(key="d").result
    assert context["dependencies"]["b"] == {"description": "Do b", "result": "b: done", "agent": "script"}
    assert context["dependencies"]["c"]["result"] == "c: done"
    assert set(context["dependencies"]) == {"b", "c"}
    assert context["plan_goal"] == plan.goal
    assert context["attempt"] == 1
    types = list(Event.objects.filter(plan=plan).values_list("type", flat=True))
    assert types[0] == "plan.created"
    assert types[-1] == "agent.execution.completed"
    assert types.count("subtask.completed") == 4
    seqs = list(Event.objects.filter(plan=plan).values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))


def test_fan_out_wider_than_max_parallel_is_chunked():
    fan = [subtask(f"fan{i}", "root", input={"sleep_ms": 30}) for i in range(7)]
    plan = run_plan(subtask("root"), *fan, subtask("sink", *[f"fan{i}" for i in range(7)]), max_parallel=3)
    assert plan.status == PlanStatus.COMPLETED
    batches = {}
    for key, batch in plan.subtasks.values_list("key", "batch_index"):
        batches.setdefault(batch, []).append(key)
    assert [sorted(batches[i]) for i in sorted(batches)] == [
        ["root"],
        ["fan0", "fan1", "fan2"],
        ["fan3", "fan4", "fan5"],
        ["fan6"],
        ["sink"],
    ]
    assert_batches_ran_in_order(plan)
    assert all(attempts == 1 for attempts in plan.subtasks.values_list("attempts", flat=True))


def test_a_diamond_plan_keeps_every_invariant():
    plan = start(subtask("a"), subtask("b", "a"), subtask("c", "a"), subtask("d", "b", "c"))
    assert_invariants(plan)
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.COMPLETED


def test_runs_that_succeed_store_no_celery_result_and_their_chords_still_advance():
    plan = run_plan(
        subtask("a", input={"result": "A"}),
        subtask("b", "a", max_retries=1, input={"fail_times": 1, "result": "B"}),
        subtask("c", "a", input={"echo": True}),
        subtask("d", "b", "c"),
    )

    assert plan.status == PlanStatus.COMPLETED
    assert dict(plan.subtasks.values_list("key", "attempts")) == {"a": 1, "b": 2, "c": 1, "d": 1}
    states = {task.key: AsyncResult(task.task_id).state for task in plan.subtasks.all()}
    if is_database_backend(settings.CELERY_RESULT_BACKEND):  # django-db keeps each run's result for the admin
        assert states == dict.fromkeys("abcd", "SUCCESS")
    else:
        # Nothing reads a run's return value (the engine keeps it), so none is written (Celery
        # reports an unknown task as PENDING); the retry of "b" is kept, as errors are.
        assert states == {"a": "PENDING", "b": "RETRY", "c": "PENDING", "d": "PENDING"}
