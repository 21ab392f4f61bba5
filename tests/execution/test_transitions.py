"""The state machine: allowed changes, recorded history and events, and concurrent changes."""

import threading

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from execution.events import Sql, events_batched, percentage
from execution.models import Event, ExecState, ExecutionState, StateTransition
from execution.selectors import plan_progress
from execution.states import (
    EXECUTION_TRANSITIONS,
    PLAN_TRANSITIONS,
    SUBTASK_ACTIVE,
    SUBTASK_TRANSITIONS,
    SUBTASK_UNSETTLED,
)
from execution.transitions import (
    TransitionConflict,
    TransitionNotAllowed,
    execution_transition,
    plan_transition,
    subtask_transition,
    subtasks_transition,
    transitions_flush,
    transitions_held,
)
from plans.models import PlanStatus, Subtask, SubtaskStatus
from tests.support.factories import draft_plan, subtask
from tests.support.flows import start

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("table", [PLAN_TRANSITIONS, SUBTASK_TRANSITIONS, EXECUTION_TRANSITIONS])
def test_tables_name_only_known_states(table):
    assert all(target in table for targets in table.values() for target in targets)


def test_allowed_transition_is_recorded_with_an_event():
    plan = draft_plan()
    execution = ExecutionState.objects.create(plan=plan)
    returned = execution_transition(
        execution=execution, to=ExecState.RUNNING, reason="started", actor="alice", metadata={"batch": 0}
    )

    execution.refresh_from_db()
    assert execution.state == ExecState.RUNNING
    record = StateTransition.objects.get(execution=execution)
    assert (returned.pk, returned.created_at, returned._state.adding) == (record.pk, record.created_at, False)
    assert (record.from_state, record.to_state, record.reason, record.actor, record.metadata) == (
        "preparing",
        "running",
        "started",
        "alice",
        {"batch": 0},
    )
    event = Event.objects.get(plan=plan)
    assert event.seq == 1
    assert event.type == "agent.execution.state_changed"
    assert event.payload == {
        "plan_id": str(plan.pk),
        "execution_id": str(execution.pk),
        "previous_state": "preparing",
        "new_state": "running",
        "reason": "started",
        "actor": "alice",
    }


def test_disallowed_transition_changes_nothing():
    execution = ExecutionState.objects.create(plan=draft_plan(), state=ExecState.COMPLETED)
    with pytest.raises(TransitionNotAllowed) as caught:
        execution_transition(execution=execution, to=ExecState.RUNNING)
    assert caught.value.current_status == "completed"
    assert not StateTransition.objects.exists()
    assert not Event.objects.exists()


def test_stale_read_is_a_conflict_and_changes_nothing():
    execution = ExecutionState.objects.create(plan=draft_plan(), state=ExecState.RUNNING)
    stale = ExecutionState.objects.get(pk=execution.pk)
    execution_transition(execution=execution, to=ExecState.PAUSED)
    with pytest.raises(TransitionConflict) as caught:
        execution_transition(execution=stale, to=ExecState.WAITING_APPROVAL)
    assert caught.value.current_status == "paused"
    assert StateTransition.objects.count() == 1


def test_a_conflict_inside_a_transaction_leaves_it_usable():
    execution = ExecutionState.objects.create(plan=draft_plan(), state=ExecState.RUNNING)
    stale = ExecutionState.objects.get(pk=execution.pk)
    with transaction.atomic():
        execution_transition(execution=execution, to=ExecState.PAUSED)
        with pytest.raises(TransitionConflict):
            execution_transition(execution=stale, to=ExecState.PAUSED)
        execution_transition(execution=execution, to=ExecState.RUNNING)
    assert list(StateTransition.objects.values_list("to_state", flat=True)) == ["paused", "running"]


def test_in_a_batch_of_its_plans_events_a_change_is_made_by_the_statement_that_writes_them():
    plan = draft_plan()
    execution = ExecutionState.objects.create(plan=plan)
    with CaptureQueriesContext(connection) as queries, events_batched(plan_id=plan.pk):
        execution_transition(execution=execution, to=ExecState.RUNNING, reason="started", metadata={"batch": 0})
        assert not queries, "held for the batch"
        assert execution.state == ExecState.RUNNING
    assert len(queries) == 1
    record = StateTransition.objects.get(execution=execution)
    assert (record.from_state, record.to_state, record.reason, record.actor, record.metadata) == (
        "preparing",
        "running",
        "started",
        "system",
        {"batch": 0},
    )
    assert ExecutionState.objects.get(pk=execution.pk).state == ExecState.RUNNING
    assert Event.objects.get(plan=plan).payload["new_state"] == "running"


def test_two_changes_in_one_batch_are_made_in_their_order():
    plan = draft_plan()
    execution = ExecutionState.objects.create(plan=plan)
    with events_batched(plan_id=plan.pk):
        execution_transition(execution=execution, to=ExecState.RUNNING)
        execution_transition(execution=execution, to=ExecState.PAUSED)
    assert list(StateTransition.objects.order_by("id").values_list("from_state", "to_state")) == [
        ("preparing", "running"),
        ("running", "paused"),
    ]
    assert ExecutionState.objects.get(pk=execution.pk).state == ExecState.PAUSED
    assert [event.payload["new_state"] for event in Event.objects.filter(plan=plan).order_by("seq")] == [
        "running",
        "paused",
    ]


def test_a_stale_change_in_a_batch_is_a_conflict_as_the_batch_is_written_which_writes_nothing():
    plan = draft_plan()
    execution = ExecutionState.objects.create(plan=plan, state=ExecState.RUNNING)
    stale = ExecutionState.objects.get(pk=execution.pk)
    execution_transition(execution=execution, to=ExecState.PAUSED)
    # A caller that takes the conflict and commits (as a stale run's outcome does) commits none of the batch.
    with transaction.atomic(), pytest.raises(TransitionConflict) as caught, events_batched(plan_id=plan.pk):
        execution_transition(execution=stale, to=ExecState.WAITING_APPROVAL)
    assert (caught.value.current_status, stale.state) == ("paused", "paused")
    assert list(StateTransition.objects.values_list("to_state", flat=True)) == ["paused"]
    assert list(Event.objects.filter(plan=plan).values_list("seq", flat=True)) == [1]
    plan.refresh_from_db()
    assert plan.last_event_seq == 1


def _race(execution_id, targets):
    """Make the same transition from the same read in two threads at once; return the outcomes."""
    both_read = threading.Barrier(len(targets))
    outcomes: list[str] = []

    def change(target: str) -> None:
        try:
            mine = ExecutionState.objects.get(pk=execution_id)
            both_read.wait()
            with transaction.atomic():
                execution_transition(execution=mine, to=target, actor=target)
            outcomes.append("won")
        except TransitionConflict as conflict:
            outcomes.append(f"conflict:{conflict.current_status}")
        finally:
            connection.close()

    threads = [threading.Thread(target=change, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_concurrent_transitions_from_the_same_state_have_one_winner():
    for _ in range(10):
        execution = ExecutionState.objects.create(plan=draft_plan(), state=ExecState.RUNNING)
        outcomes = _race(execution.pk, [ExecState.PAUSED, ExecState.WAITING_APPROVAL])

        assert sorted(o.split(":")[0] for o in outcomes) == ["conflict", "won"]
        execution.refresh_from_db()
        winner = StateTransition.objects.get(execution=execution)
        assert execution.state == winner.to_state
        assert f"conflict:{winner.to_state}" in outcomes


def test_plan_transition_stamps_times_and_emits_an_event():
    plan = draft_plan()
    plan_transition(plan=plan, to=PlanStatus.APPROVED, actor="bob")
    plan.refresh_from_db()
    assert plan.status == PlanStatus.APPROVED
    assert plan.approved_at is not None
    assert Event.objects.get(plan=plan).type == "plan.approved"
    with pytest.raises(TransitionNotAllowed):
        plan_transition(plan=plan, to=PlanStatus.COMPLETED)


def test_subtask_transition_is_fenced_on_the_attempt():
    plan = draft_plan(None, subtask("a"))
    task = plan.subtasks.get()
    subtask_transition(subtask=task, to=SubtaskStatus.QUEUED)
    stale = plan.subtasks.get()
    subtask_transition(subtask=task, to=SubtaskStatus.RUNNING, fields={"attempts": 1})
    assert plan.subtasks.get().attempts == 1

    # A duplicate of the same dispatch finds the attempt already taken.
    with pytest.raises(TransitionConflict):
        subtask_transition(subtask=stale, to=SubtaskStatus.RUNNING, fields={"attempts": 1})
    types = list(Event.objects.filter(plan=plan).values_list("type", flat=True))
    assert types == ["subtask.queued", "subtask.started"]


def test_bulk_subtask_transition_skips_what_the_table_forbids():
    plan = draft_plan(None, subtask("a"), subtask("b"), subtask("c"))
    a = plan.subtasks.get(key="a")
    subtask_transition(subtask=a, to=SubtaskStatus.QUEUED)
    subtask_transition(subtask=a, to=SubtaskStatus.RUNNING)
    subtask_transition(subtask=a, to=SubtaskStatus.DONE)

    changed = subtasks_transition(subtasks=plan.subtasks.all(), to=SubtaskStatus.CANCELLED, reason="cancelled")
    assert sorted(s.key for s in changed) == ["b", "c"]
    assert dict(plan.subtasks.values_list("key", "status")) == {"a": "done", "b": "cancelled", "c": "cancelled"}
    seqs = list(Event.objects.filter(plan=plan).values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))


def test_the_subtask_indexes_cover_the_status_sets_of_the_table():
    conditions = {index.name: index.condition for index in Subtask._meta.indexes}
    assert set(dict(conditions["subtask_active"].children)["status__in"]) == SUBTASK_ACTIVE
    assert set(dict(conditions["subtask_unsettled"].children)["status__in"]) == SUBTASK_UNSETTLED


def test_the_percentage_is_the_same_number_in_python_and_in_postgresql():
    pairs = [(done, total) for total in range(1, 160) for done in range(total + 1)]
    formula = percentage(Sql("pair.done"), Sql("pair.total"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {formula} FROM unnest(%s::int[], %s::int[]) WITH ORDINALITY AS pair(done, total, n) ORDER BY n",
            [[done for done, _ in pairs], [total for _, total in pairs]],
        )
        in_sql = [row[0] for row in cursor.fetchall()]
    assert in_sql == [percentage(done, total) for done, total in pairs]
    assert percentage(1, 3) == 33.3
    assert percentage(1, 8) == 12.5
    assert percentage(1, 400) == 0.3  # half up


@pytest.mark.django_db(transaction=True)
def test_the_hot_path_writes_the_events_the_python_path_writes(worker, outbox):
    plan = start(subtask("a", input={"result": "r"}), subtask("b", max_retries=0, input={"fail_times": 1}))
    worker.drain()

    by_type = {event.type: event.payload for event in plan.events.order_by("seq")}
    queued, started, completed = by_type["subtask.queued"], by_type["subtask.started"], by_type["subtask.completed"]
    assert set(started) == set(queued) == set(completed) - {"result"}
    assert (started["subtask_id"], started["plan_id"]) == (str(plan.subtasks.get(key="b").pk), str(plan.pk))
    assert (started["previous_status"], started["status"], started["attempt"], started["reason"]) == (
        "queued",
        "running",
        1,
        "",
    )
    progress = [event.payload for event in plan.events.filter(type="agent.execution.progress").order_by("seq")]
    # The first after a's result (the hot path), the last after b's failure (the Python path).
    assert [event["done"] for event in progress] == [1, 1]
    assert {key: value for key, value in progress[-1].items() if key != "plan_id"} == plan_progress(plan_id=plan.pk)


def test_held_changes_are_checked_when_made_and_written_fenced_when_the_block_ends():
    plan = draft_plan(None, subtask("a"), subtask("b"))
    execution = ExecutionState.objects.create(plan=plan, state=ExecState.WAITING_APPROVAL)
    first, second = plan.subtasks.order_by("key")
    with transitions_held():
        subtasks_transition(
            subtasks=[first, second],
            to=SubtaskStatus.QUEUED,
            fields={"input": {"n": 1}},
            task_ids={first.pk: "task-1", second.pk: "task-2"},
        )
        execution_transition(execution=execution, to=ExecState.RESUMED, actor="alice")
        with pytest.raises(TransitionNotAllowed):  # checked at once, as ever
            execution_transition(execution=execution, to=ExecState.PREPARING)
        assert first.status == SubtaskStatus.QUEUED  # the objects changed, the rows not yet
        assert not plan.subtasks.filter(status=SubtaskStatus.QUEUED).exists()
        assert not StateTransition.objects.exists()
    rows = dict(plan.subtasks.filter(status=SubtaskStatus.QUEUED).values_list("key", "task_id"))
    assert rows == {first.key: "task-1", second.key: "task-2"}
    assert list(plan.subtasks.filter(key=first.key).values_list("input", flat=True)) == [{"n": 1}]
    assert ExecutionState.objects.get(pk=execution.pk).state == ExecState.RESUMED
    assert list(StateTransition.objects.values_list("from_state", "to_state", "actor")) == [
        ("waiting_approval", "resumed", "alice")
    ]

    with transaction.atomic(), transitions_held():
        subtask_transition(subtask=first, to=SubtaskStatus.RUNNING)
        transitions_flush()
        assert plan.subtasks.get(pk=first.pk).status == SubtaskStatus.RUNNING

    def cancelled_meanwhile() -> None:
        with transaction.atomic(), transitions_held():
            subtask_transition(subtask=plan.subtasks.get(pk=second.pk), to=SubtaskStatus.RUNNING)
            plan.subtasks.filter(pk=second.pk).update(status=SubtaskStatus.CANCELLED)  # the plan's lock rules it out

    with pytest.raises(TransitionConflict) as caught:
        cancelled_meanwhile()
    assert caught.value.current_status == SubtaskStatus.CANCELLED
    assert plan.subtasks.get(pk=second.pk).status == SubtaskStatus.QUEUED  # the transaction was undone
