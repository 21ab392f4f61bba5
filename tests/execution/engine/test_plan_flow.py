"""How a plan moves, decided in this process: batches, advancing, its end, failure policies, pause, cancel, retry."""

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from execution.engine.plan_flow import plan_advance, plan_lock_with_execution
from execution.models import Event, ExecState
from execution.selectors import execution_of
from execution.services import plan_cancel, plan_pause, plan_resume, plan_submit, subtask_retry
from plans.models import Plan, PlanStatus, Subtask
from plans.models import SubtaskStatus as S
from tests.support.factories import UserFactory, plan_data, subtask
from tests.support.flows import start
from tests.support.invariants import counters_match

FAILS = {"fail_times": 9}  # with max_retries 0: fails on its first run


def statuses(plan: Plan) -> dict[str, str]:
    return dict(plan.subtasks.values_list("key", "status"))


def keys_of(runs) -> list[str]:
    names = dict(Subtask.objects.values_list("pk", "key"))
    return [names[run.subtask_id] for run in runs]


def test_the_first_batch_goes_out_after_commit_as_one_chord_of_at_most_max_parallel_runs(worker, outbox):
    plan = start(subtask("a"), subtask("b"), subtask("c"), subtask("d", "a"), max_parallel=2)

    [message] = outbox.take()
    assert message.kind == "batch"
    assert keys_of(message.runs) == ["a", "b"]
    assert [run.attempt for run in message.runs] == [1, 1]
    assert [run.task_id for run in message.runs] == list(
        plan.subtasks.filter(key__in="ab").values_list("task_id", flat=True)
    )
    assert statuses(plan) == {"a": S.QUEUED, "b": S.QUEUED, "c": S.PENDING, "d": S.PENDING}


def test_the_next_batch_goes_out_only_once_the_current_one_has_settled(worker, outbox):
    plan = start(subtask("a"), subtask("b"), subtask("c", "a"))
    [batch] = outbox.take()

    worker.run(batch.runs[0])
    plan_advance(plan_id=plan.pk)  # an early callback: b has not run yet
    assert outbox.take() == []
    worker.run(batch.runs[1])
    plan_advance(plan_id=plan.pk)

    [following] = outbox.take()
    assert (following.kind, keys_of(following.runs)) == ("batch", ["c"])


def test_an_advance_delivered_twice_sends_the_next_batch_once(worker, outbox):
    plan = start(subtask("a"), subtask("b", "a"))
    worker.run(outbox.take()[0].runs[0])

    plan_advance(plan_id=plan.pk)
    plan_advance(plan_id=plan.pk)

    assert [message.kind for message in outbox.take()] == ["batch"]


def test_a_plan_whose_subtasks_are_all_done_completes_and_says_how_it_went(worker, outbox):
    plan = start(subtask("a", input={"result": 1}), subtask("b", "a"), subtask("c", "a"))

    worker.drain()

    plan.refresh_from_db()
    assert (plan.status, plan.execution.state) == (PlanStatus.COMPLETED, ExecState.COMPLETED)
    assert set(statuses(plan).values()) == {S.DONE}
    end = Event.objects.get(plan=plan, type="agent.execution.completed").payload
    assert (end["status"], end["progress"]["done"], end["progress"]["percentage"]) == ("completed", 3, 100.0)
    assert counters_match(plan_id=plan.pk)


def test_fail_fast_fails_the_plan_cancels_what_has_not_started_and_lets_running_work_finish(worker, outbox):
    plan = start(
        subtask("slow", agent="python", input={"callable": "tests.support.agents.first_delivers", "deliver": "broken"}),
        subtask("broken", max_retries=0, input=FAILS),
        subtask("waiting"),
        subtask("later", "slow"),
        max_parallel=3,
    )
    [batch] = outbox.take()
    runs = dict(zip(keys_of(batch.runs), batch.runs, strict=True))
    # While "slow" runs, "broken" runs and fails: the plan fails under it.
    worker.run(runs["slow"])

    plan.refresh_from_db()
    assert (plan.status, plan.execution.state) == (PlanStatus.FAILED, ExecState.FAILED)
    assert statuses(plan) == {"slow": S.DONE, "broken": S.FAILED, "waiting": S.CANCELLED, "later": S.CANCELLED}
    assert outbox.revoked() == [runs["waiting"].task_id]
    assert Plan.objects.get(pk=plan.pk).failed_count == 1


def test_continue_skips_the_dependents_of_a_failure_and_runs_the_independent_branches(worker, outbox):
    plan = start(
        subtask("a", max_retries=0, input=FAILS),
        subtask("b"),
        subtask("after_a", "a"),
        subtask("after_after_a", "after_a"),
        subtask("after_b", "b"),
        failure_policy="continue",
    )

    worker.drain()

    plan.refresh_from_db()
    assert statuses(plan) == {
        "a": S.FAILED,
        "b": S.DONE,
        "after_a": S.SKIPPED,
        "after_after_a": S.SKIPPED,
        "after_b": S.DONE,
    }
    assert (plan.status, plan.execution.state) == (PlanStatus.FAILED, ExecState.FAILED)


def test_a_paused_plan_sends_nothing_new_and_resuming_it_goes_on_where_it_stopped(worker, outbox):
    plan = start(subtask("a"), subtask("b", "a"))
    [batch] = outbox.take()

    plan_pause(plan_id=plan.pk, actor="op")
    worker.deliver(batch)  # the run in flight finishes; its callback dispatches nothing
    assert outbox.take() == []
    assert statuses(plan) == {"a": S.DONE, "b": S.PENDING}

    plan_resume(plan_id=plan.pk, actor="op")
    [following] = outbox.take()
    assert keys_of(following.runs) == ["b"]


def test_cancel_revokes_the_runs_in_flight_cancels_the_rest_and_a_late_run_changes_nothing(worker, outbox):
    plan = start(subtask("a"), subtask("b"), subtask("c", "a"))
    [batch] = outbox.take()

    plan_cancel(plan_id=plan.pk, actor="op", reason="changed my mind")

    assert sorted(outbox.revoked()) == sorted(run.task_id for run in batch.runs)
    assert set(statuses(plan).values()) == {S.CANCELLED}
    seq = Plan.objects.get(pk=plan.pk).last_event_seq
    assert worker.run(batch.runs[0]) is None  # delivered although revoked: fenced off
    assert Plan.objects.get(pk=plan.pk).last_event_seq == seq
    assert plan.execution.transitions.last().to_state == ExecState.CANCELLED


def test_retrying_a_failed_subtask_runs_it_from_scratch_with_what_its_failure_stopped(worker, outbox):
    plan = start(subtask("c"), subtask("a", max_retries=0, input={"fail_times": 1}), subtask("b", "a"))
    worker.drain()
    assert statuses(plan) == {"c": S.DONE, "a": S.FAILED, "b": S.CANCELLED}

    subtask_retry(plan_id=plan.pk, key="a", actor="op")
    [run] = outbox.runs()
    assert (keys_of([run]), run.attempt) == (["a"], 2)
    worker.drain()

    plan.refresh_from_db()
    assert (plan.status, statuses(plan)) == (PlanStatus.COMPLETED, {"c": S.DONE, "a": S.DONE, "b": S.DONE})
    assert list(plan.events.filter(type__startswith="plan.").values_list("type", flat=True)) == [
        "plan.created",
        "plan.approved",
        "plan.started",
        "plan.failed",
        "plan.retried",
        "plan.completed",
    ]


def test_an_advance_locks_the_plan_then_its_execution_in_one_statement_and_reads_no_execution_again(worker, outbox):
    plan = start(subtask("a"), subtask("b", "a"))
    [batch] = outbox.take()
    worker.run(batch.runs[0])
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        locked = plan_lock_with_execution(plan.pk)
        execution = execution_of(locked)
    [statement] = [q["sql"] for q in queries]
    # The plan's row first: the one lock order (PostgreSQL locks in the order FOR UPDATE OF names).
    assert statement.endswith('FOR UPDATE OF "plans_plan", "execution_executionstate"')
    assert (locked.pk, locked.status, execution.state) == (plan.pk, PlanStatus.IN_PROGRESS, ExecState.RUNNING)
    assert execution.plan is locked

    plan_advance(plan_id=plan.pk)
    [following] = outbox.take()
    assert keys_of(following.runs) == ["b"]


def test_a_plan_not_started_is_locked_alone_and_known_to_have_no_execution(db):
    plan = plan_submit(owner=UserFactory(), data=plan_data(subtask("a")))
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        locked = plan_lock_with_execution(plan.pk)
        assert execution_of(locked) is None
    # Finding none, then the plan's lock and, after it, the execution read again: one could have
    # been created while the lock was awaited.
    assert len(queries) == 3
    assert locked.status == PlanStatus.DRAFT
