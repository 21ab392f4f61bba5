"""How one run goes, decided in this process: its fenced start, its agent, its outcome, retries, lost runs."""

from execution.engine.runs import retry_delay, subtask_hard_timeout
from plans.models import Plan, Subtask
from plans.models import SubtaskStatus as S
from tests.support.factories import subtask
from tests.support.flows import start
from tests.support.outbox import start_and_lose


def test_a_run_starts_only_from_its_subtask_queued_at_the_attempt_before(worker, outbox):
    plan = start(subtask("a"))
    run = outbox.only_run()
    early = run.__class__(run.subtask_id, run.attempt + 3, run.task_id, run.timeout_s)

    assert worker.run(early) is None  # a stale or future attempt: dropped
    assert Subtask.objects.get(pk=run.subtask_id).status == S.QUEUED
    worker.run(run)
    seq = Plan.objects.get(pk=plan.pk).last_event_seq
    worker.run(run)  # a duplicate of a finished run

    done = Subtask.objects.get(pk=run.subtask_id)
    assert (done.status, done.attempts, done.worker) == (S.DONE, 1, worker.NAME)
    assert Plan.objects.get(pk=plan.pk).last_event_seq == seq


def test_the_agent_gets_its_context_with_the_results_of_its_dependencies(worker, outbox):
    plan = start(subtask("a", input={"result": {"answer": 42}}), subtask("b", "a", input={"echo": True}), goal="Know")

    worker.drain()

    seen = plan.subtasks.get(key="b").result
    assert seen["dependencies"] == {"a": {"description": "Do a", "result": {"answer": 42}, "agent": "script"}}
    assert (seen["plan_goal"], seen["subtask_key"], seen["attempt"], seen["tool_calls"]) == ("Know", "b", 1, [])


def test_an_agent_error_is_retried_after_a_backoff_as_the_next_attempt(worker, outbox):
    plan = start(subtask("a", max_retries=2, input={"fail_times": 1, "result": "second time lucky"}))
    run = outbox.only_run()

    assert worker.run(run) == retry_delay(0)
    waiting = plan.subtasks.get()
    assert (waiting.status, waiting.retries, waiting.attempts) == (S.QUEUED, 1, 1)
    assert "Scripted failure on attempt 1" in waiting.error
    retried = plan.events.filter(type="subtask.queued").last().payload
    assert (retried["reason"], retried["retry_in_s"]) == ("retrying after an error", retry_delay(0))

    assert worker.run(run, attempt=2) is None
    assert (plan.subtasks.get().status, plan.subtasks.get().result) == (S.DONE, "second time lucky")


def test_an_agent_that_keeps_failing_fails_its_subtask_after_its_retries_saying_how_often(worker, outbox):
    plan = start(subtask("a", max_retries=1, input={"fail_times": 5}))

    worker.drain()

    failed = plan.subtasks.get()
    assert (failed.status, failed.attempts) == (S.FAILED, 2)
    assert failed.error.endswith("(failed 2 times)")


def test_what_an_agent_returns_that_is_no_step_fails_the_subtask_at_once(worker, outbox):
    plan = start(subtask("a", agent="python", input={"callable": "tests.support.agents.returns_a_set"}))

    worker.drain()

    failed = plan.subtasks.get()
    assert (failed.status, failed.attempts) == (S.FAILED, 1)
    assert "not JSON-serialisable" in failed.error


def test_a_message_for_a_run_whose_worker_died_takes_the_run_over_as_the_next_attempt(worker, outbox):
    plan = start(subtask("a"))
    run = outbox.only_run()
    start_and_lose(run)

    assert worker.run(run) is None  # delivered again (acks_late) after the worker died

    [again] = outbox.runs()
    taken_over = plan.subtasks.get()
    assert (taken_over.status, taken_over.lost_runs, again.attempt) == (S.QUEUED, 1, 2)
    worker.drain()
    assert plan.subtasks.get().status == S.DONE


def test_a_run_killed_at_its_hard_limit_is_recorded_as_a_time_out_and_retried(worker, outbox):
    plan = start(subtask("a", timeout_s=5))
    run = outbox.only_run()
    start_and_lose(run)

    subtask_hard_timeout(subtask_id=run.subtask_id, attempt=1, task_id=run.task_id, hard_limit_s=7)

    [retry] = outbox.take()
    killed = plan.subtasks.get()
    assert (retry.kind, retry.runs[0].attempt, retry.countdown) == ("run", 2, retry_delay(0))
    assert (killed.status, killed.retries) == (S.QUEUED, 1)
    assert killed.error.startswith("Timed out after 5s: the agent did not stop at its time limit")


def test_a_run_killed_at_its_hard_limit_after_its_outcome_leaves_its_plan_an_advance(worker, outbox):
    # Killed in the advance it had taken off its chain: the plan's next batch must still go out.
    plan = start(subtask("a"), subtask("b", "a"))
    run = outbox.only_run()
    assert worker.run(run) is None
    assert plan.subtasks.get(key="a").status == S.DONE

    subtask_hard_timeout(subtask_id=run.subtask_id, attempt=1, task_id=run.task_id, hard_limit_s=7)

    [advance] = outbox.take()
    assert (advance.kind, advance.plan_id) == ("advance", plan.pk)
    assert plan.subtasks.get(key="a").status == S.DONE  # nothing recorded against the finished run


def test_the_late_outcome_of_a_superseded_attempt_changes_nothing(worker, outbox):
    plan = start(subtask("a", agent="python", input={"callable": "tests.support.agents.superseded_meanwhile"}))
    run = outbox.only_run()

    assert worker.run(run) is None  # its subtask was given to attempt 2 while its agent ran

    superseded = plan.subtasks.get()
    assert (superseded.status, superseded.attempts, superseded.result) == (S.QUEUED, 1, None)
    assert [again.attempt for again in outbox.runs()] == [2]
