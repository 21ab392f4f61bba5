"""How the reconciler repairs, in this process: lost runs, poison, lost messages, lost callbacks; each once."""

import contextlib
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from execution.engine import reconciler
from execution.engine.reconciler import reconcile
from execution.models import Event
from plans.models import Plan
from plans.models import SubtaskStatus as S
from tests.support.factories import subtask
from tests.support.flows import start
from tests.support.outbox import start_and_lose

LONG_AGO = timezone.now() - timedelta(minutes=10)
NOTHING = {"lost_runs": 0, "resent": 0, "advanced": 0}


@contextlib.contextmanager
def lease_held_elsewhere(run) -> Iterator[None]:
    """Hold a run's lease from another session, as a live (or frozen) worker does."""
    params = {key: value for key, value in connection.get_connection_params().items() if key != "cursor_factory"}
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtext(%s), %s)", [str(run.subtask_id), run.attempt])
        yield


@pytest.fixture
def queue_length(monkeypatch):
    """The broker's view of the subtasks queue, which the reconciler asks before sending again."""
    length = {"now": 0}
    monkeypatch.setattr(reconciler, "subtask_queue_length", lambda: length["now"])
    return length


@pytest.fixture(autouse=True)
def held_by_workers(monkeypatch):
    """The task ids the workers say they hold (reserved, running, or waiting for a countdown)."""
    held: set[str] = set()
    monkeypatch.setattr(reconciler, "tasks_held_by_workers", lambda task_ids: held & set(task_ids))
    return held


def test_a_run_whose_worker_is_gone_is_sent_again_as_the_next_attempt_once(worker, outbox, queue_length):
    plan = start(subtask("a"))
    start_and_lose(outbox.only_run())

    assert reconcile() == {**NOTHING, "lost_runs": 1}
    assert reconcile() == NOTHING

    [again] = outbox.runs()
    assert (again.attempt, plan.subtasks.get().lost_runs) == (2, 1)


def test_a_run_lost_too_often_fails_its_subtask_as_poison(worker, outbox, queue_length, settings):
    limit = int(settings.EXECUTION_MAX_LOST_RUNS)
    plan = start(subtask("a"), subtask("b", "a"))
    plan.subtasks.filter(key="a").update(lost_runs=limit - 1)
    start_and_lose(outbox.only_run())

    assert reconcile()["lost_runs"] == 1

    poison = plan.subtasks.get(key="a")
    assert (poison.status, plan.subtasks.get(key="b").status) == (S.FAILED, S.CANCELLED)
    assert poison.error.startswith(f"Poison: its run was lost {limit} times")
    assert Plan.objects.get(pk=plan.pk).status == "failed"


def test_a_live_run_is_left_alone_and_a_hung_one_past_its_lease_is_taken_over(worker, outbox, queue_length):
    plan = start(subtask("a"))
    run = outbox.only_run()
    start_and_lose(run)

    with lease_held_elsewhere(run):
        assert reconcile() == NOTHING
        plan.subtasks.update(lease_expires_at=LONG_AGO)
        assert reconcile()["lost_runs"] == 1

    assert [again.attempt for again in outbox.runs()] == [2]
    assert "past its lease" in plan.events.filter(type="subtask.queued").last().payload["reason"]


def test_a_queued_subtask_whose_message_never_went_out_is_sent_again_under_the_same_attempt(
    worker, outbox, queue_length
):
    plan = start(subtask("a"))
    run = outbox.only_run()
    plan.subtasks.update(task_id="", queued_at=LONG_AGO)  # its publish was lost after commit

    assert reconcile() == {**NOTHING, "resent": 1}

    [again] = outbox.runs()
    assert (again.attempt, again.task_id) == (run.attempt, plan.subtasks.get().task_id)
    resent = Event.objects.get(plan=plan, type="subtask.resent").payload
    assert (resent["subtask_key"], resent["attempt"]) == ("a", 1)


def test_a_queued_subtask_is_sent_again_only_while_its_queue_is_empty(worker, outbox, queue_length):
    plan = start(subtask("a"))
    outbox.only_run()
    plan.subtasks.update(queued_at=LONG_AGO)

    queue_length["now"] = 3  # its message may still wait behind others
    assert reconcile() == NOTHING
    queue_length["now"] = 0
    assert reconcile()["resent"] == 1


def test_a_queued_subtask_whose_message_a_worker_has_taken_is_left_alone(worker, outbox, queue_length, held_by_workers):
    plan = start(subtask("a"))
    run = outbox.only_run()
    plan.subtasks.update(queued_at=LONG_AGO)

    # The queue is empty because a worker took the message and has not started the run yet.
    held_by_workers.add(run.task_id)
    assert reconcile() == NOTHING
    held_by_workers.clear()
    assert reconcile()["resent"] == 1


def test_a_plan_whose_chord_callback_was_lost_is_advanced_once_idle_for_the_stall_time(worker, outbox, queue_length):
    plan = start(subtask("a"), subtask("b", "a"))
    worker.run(outbox.only_run())  # ... and its chord callback never comes

    assert reconcile() == NOTHING  # it has just settled: the callback may still come
    Event.objects.filter(plan=plan).update(created_at=LONG_AGO)
    assert reconcile() == {**NOTHING, "advanced": 1}

    assert [message.kind for message in outbox.take()] == ["batch"]
    assert plan.subtasks.get(key="b").status == S.QUEUED
