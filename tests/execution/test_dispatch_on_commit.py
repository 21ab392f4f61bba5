"""Dispatch happens only after the transaction commits, and never for rolled-back work."""

from types import SimpleNamespace
from uuid import uuid4

import pytest
from django.db import transaction

from execution import canvas
from execution.services import plan_submit
from plans.models import Plan, SubtaskStatus
from tests.support.factories import UserFactory, plan_data, subtask

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    """Record what would be sent to the broker instead of sending it."""
    batches: list[tuple] = []
    monkeypatch.setattr(canvas, "send_batch", lambda plan_id, runs: batches.append((plan_id, runs)))
    return batches


def test_the_first_batch_is_sent_after_commit(sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        plan = plan_submit(
            owner=UserFactory(), data=plan_data(subtask("a"), subtask("b"), subtask("c", "a"), requires_approval=False)
        )
    assert sent == []
    assert dict(plan.subtasks.values_list("key", "status")) == {"a": "queued", "b": "queued", "c": "pending"}

    for callback in callbacks:
        callback()
    [(plan_id, runs)] = sent
    assert plan_id == plan.pk
    a, b = plan.subtasks.get(key="a"), plan.subtasks.get(key="b")
    assert [(run.subtask_id, run.attempt, run.task_id) for run in runs] == [(a.pk, 1, a.task_id), (b.pk, 1, b.task_id)]


def test_nothing_is_sent_for_a_rolled_back_transaction(sent, django_capture_on_commit_callbacks):
    def submit_then_fail():
        with transaction.atomic():
            plan_submit(owner=UserFactory(), data=plan_data(subtask("a"), requires_approval=False))
            raise RuntimeError("rolled back")

    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(RuntimeError):
        submit_then_fail()
    assert callbacks == []
    assert sent == []
    assert not Plan.objects.exists()


def test_a_plan_needing_approval_sends_nothing(sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        plan = plan_submit(owner=UserFactory(), data=plan_data(subtask("a")))
    assert sent == []
    assert plan.subtasks.get().status == SubtaskStatus.PENDING


def test_runs_sent_while_held_go_out_together_when_the_hold_ends(monkeypatch):
    published: list[str] = []

    def chain(first, then):
        return SimpleNamespace(apply_async=lambda: published.append(first.kwargs["subtask_id"]))

    monkeypatch.setattr(canvas, "chain", chain)
    runs = [canvas.Run(subtask_id=uuid4(), attempt=1, task_id=str(uuid4()), timeout_s=10) for _ in range(2)]
    with canvas.sends_held():
        canvas.send_runs(uuid4(), runs[:1])
        canvas.send_runs(uuid4(), runs[1:])
        assert published == []
    assert published == [str(run.subtask_id) for run in runs]
    canvas.send_runs(uuid4(), runs[:1])
    assert len(published) == 3
