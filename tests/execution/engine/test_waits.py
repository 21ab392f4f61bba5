"""How a wait is decided and resumed, in this process: tool calls put a subtask to wait, decisions resume it."""

from uuid import UUID

from django.db import connection
from django.test.utils import CaptureQueriesContext

from approvals.models import Approval, ApprovalStatus
from approvals.services import approval_decide
from execution import canvas
from execution.models import ExecState, ExecutionState
from execution.services import plan_pause, plan_resume
from plans.models import Plan
from plans.models import SubtaskStatus as S
from tests.support.factories import subtask
from tests.support.flows import start

DEPLOY = {"tool_calls": [{"tool": "deploy", "arguments": {"env": "prod"}}], "result": "deployed"}


def waiting(worker, outbox, *subtasks, **fields) -> Plan:
    """Start a plan and run its first batch: its subtasks asking for tool calls wait."""
    plan = start(*subtasks, **fields)
    worker.drain()
    return Plan.objects.get(pk=plan.pk)


def test_a_tool_call_needing_approval_puts_the_subtask_and_the_execution_to_wait_holding_nothing(worker, outbox):
    plan = waiting(worker, outbox, subtask("a", input=DEPLOY))

    task = plan.subtasks.get()
    [entry] = task.tool_calls
    approval = Approval.objects.get(plan=plan)
    assert (task.status, plan.execution.state) == (S.WAITING_APPROVAL, ExecState.WAITING_APPROVAL)
    assert (entry["tool"], entry["status"], UUID(entry["approval_id"])) == ("deploy", "pending", approval.pk)
    assert (approval.status, approval.tool, approval.arguments, approval.call_index) == (
        ApprovalStatus.PENDING,
        "deploy",
        {"env": "prod"},
        0,
    )
    assert outbox.take() == []  # no run is sent, none waits in a worker
    assert list(plan.events.filter(type__startswith="approval.").values_list("type", flat=True)) == [
        "approval.requested"
    ]


def test_an_approval_resumes_the_subtask_as_its_next_attempt_with_the_result_sent(worker, outbox):
    plan = waiting(worker, outbox, subtask("a", input=DEPLOY))

    approval_decide(approval_id=Approval.objects.get(plan=plan).pk, decided_by=None, approve=True, result="ok")

    [resume] = outbox.messages
    assert (resume.kind, resume.runs[0].attempt) == ("run", 2)
    plan.refresh_from_db()
    assert (plan.subtasks.get().status, plan.execution.state) == (S.QUEUED, ExecState.RESUMED)
    worker.drain()
    plan.refresh_from_db()
    assert plan.subtasks.get().result == {"result": "deployed", "tool_results": ["ok"]}
    assert (plan.status, plan.execution.state) == ("completed", ExecState.COMPLETED)


def test_a_rejection_resumes_the_agent_which_fails_with_the_reason(worker, outbox):
    plan = waiting(worker, outbox, subtask("a", input=DEPLOY))

    approval_decide(approval_id=Approval.objects.get(plan=plan).pk, decided_by=None, approve=False, reason="not today")
    worker.drain()

    failed = plan.subtasks.get()
    assert failed.status == S.FAILED
    assert failed.error == "Tool call 'deploy' was rejected: not today"
    assert failed.tool_calls[0]["status"] == "rejected"


def test_the_calls_of_one_answer_resume_the_subtask_once_all_are_decided(worker, outbox):
    plan = waiting(
        worker, outbox, subtask("a", agent="python", input={"callable": "tests.support.agents.two_tool_calls"})
    )
    read, write = Approval.objects.filter(plan=plan).order_by("call_index")

    approval_decide(approval_id=read.pk, decided_by=None, approve=True, result="text")
    assert outbox.take() == []
    noted = plan.subtasks.get()
    assert (noted.status, [entry["status"] for entry in noted.tool_calls]) == (
        S.WAITING_APPROVAL,
        ["approved", "pending"],
    )

    approval_decide(approval_id=write.pk, decided_by=None, approve=True)
    assert [run.attempt for run in outbox.runs()] == [2]


def test_a_decision_while_the_plan_is_paused_is_held_until_it_resumes(worker, outbox):
    plan = waiting(worker, outbox, subtask("a", input=DEPLOY))
    plan_pause(plan_id=plan.pk, actor="op")

    approval_decide(approval_id=Approval.objects.get(plan=plan).pk, decided_by=None, approve=True)
    held = plan.subtasks.get()
    assert (outbox.take(), held.status, held.task_id) == ([], S.QUEUED, "")

    plan_resume(plan_id=plan.pk, actor="op")
    [run] = outbox.runs()
    assert (run.attempt, run.task_id) == (2, plan.subtasks.get().task_id)


def test_the_resumed_run_s_start_shows_the_execution_running_in_the_same_statement(worker, outbox, monkeypatch):
    plan = waiting(worker, outbox, subtask("a", input=DEPLOY))
    Plan.objects.filter(pk=plan.pk).update(callback_url="https://hooks.example.com/plan")
    approval_decide(approval_id=Approval.objects.get(plan=plan).pk, decided_by=None, approve=True, result="ok")
    [resume] = [message for message in outbox.take() if message.kind == "run"]
    hooked: list[int] = []
    monkeypatch.setattr(canvas, "send_webhooks", lambda plan_id, seqs: hooked.extend(seqs))
    before = Plan.objects.get(pk=plan.pk).last_event_seq

    with CaptureQueriesContext(connection) as queries:
        assert worker.run(resume.runs[0]) is None  # started and finished; the advance is not delivered

    # One statement starts the run and records the execution's change (no transaction of its own).
    [recorded] = [query["sql"] for query in queries if "execution_statetransition" in query["sql"]]
    assert "pg_try_advisory_lock" in recorded

    execution = ExecutionState.objects.get(plan=plan)
    assert execution.state == ExecState.RUNNING
    last = execution.transitions.order_by("-id").first()
    assert (last.from_state, last.to_state, last.reason, last.actor, last.metadata) == (
        ExecState.RESUMED,
        ExecState.RUNNING,
        "subtask 'a' running",
        "system",
        {},
    )
    started, running = plan.events.filter(seq__in=[before + 1, before + 2]).order_by("seq")
    assert (started.type, started.payload["status"]) == ("subtask.started", "running")
    assert (running.type, running.payload) == (
        "agent.execution.state_changed",
        {
            "execution_id": str(execution.pk),
            "previous_state": "resumed",
            "new_state": "running",
            "reason": "subtask 'a' running",
            "actor": "system",
        },
    )
    assert hooked[:2] == [before + 1, before + 2]  # each event goes to the plan's webhook
    seqs = list(plan.events.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, Plan.objects.get(pk=plan.pk).last_event_seq + 1))


def test_a_run_that_does_not_start_leaves_the_execution_as_the_decision_left_it(worker, outbox):
    plan = waiting(worker, outbox, subtask("a", input=DEPLOY))
    approval_decide(approval_id=Approval.objects.get(plan=plan).pk, decided_by=None, approve=True, result="ok")
    [resume] = [message for message in outbox.take() if message.kind == "run"]
    run = resume.runs[0]
    before = Plan.objects.get(pk=plan.pk).last_event_seq

    assert worker.run(run.__class__(run.subtask_id, run.attempt + 1, run.task_id, run.timeout_s)) is None  # stale

    assert ExecutionState.objects.get(plan=plan).state == ExecState.RESUMED
    assert Plan.objects.get(pk=plan.pk).last_event_seq == before
