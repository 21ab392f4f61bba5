"""POST /approvals/decide/: many votes in a few transactions, each independent, in a fixed number of statements each."""

import threading
from contextlib import contextmanager

import pytest
from django.db import connection
from django.db.models import Count, Q
from django.test.utils import CaptureQueriesContext

from approvals import bulk
from approvals.errors import AlreadyDecided, VoteInvalid
from approvals.models import Approval, Vote
from approvals.transitions import approval_transition, approvals_held
from execution import canvas
from execution.events import PROGRESS_EVENT, counter, events_append, events_batched, events_batched_across, events_flush
from execution.models import Event, ExecState, ExecutionState, StateTransition
from execution.services import plan_submit
from plans.models import Plan, Subtask, SubtaskStatus
from tests.api.conftest import client_for
from tests.api.test_approvals import waiting_tool_call
from tests.support.factories import plan_data, subtask

pytestmark = pytest.mark.django_db

DECIDE = "/api/v1/approvals/decide/"


@pytest.fixture
def sent(monkeypatch):
    """Record the resumes sent instead of sending them."""
    runs: list[tuple] = []
    monkeypatch.setattr(canvas, "send_runs", lambda plan_id, batch, **options: runs.append((plan_id, batch)))
    return runs


def parked(owner, count: int) -> list[Approval]:
    """Return `count` plans' pending tool calls, one each, their executions waiting as the engine leaves them."""
    plans = [plan_submit(owner=owner, data=plan_data(subtask("a"), requires_approval=False)) for _ in range(count)]
    approvals = [waiting_tool_call(plan) for plan in plans]
    ExecutionState.objects.filter(plan__in=plans).update(state=ExecState.WAITING_APPROVAL)
    return approvals


def approve_all(approvals: list[Approval]) -> dict:
    return {"decisions": [{"id": str(approval.pk), "decision": "approve", "result": "ok"} for approval in approvals]}


def statements(user, approvals: list[Approval]) -> int:
    with CaptureQueriesContext(connection) as queries:
        answer = client_for(user).post(DECIDE, approve_all(approvals), format="json")
    assert [item["status"] for item in answer.json()["results"]] == ["approved"] * len(approvals)
    return len(queries)


def test_a_transaction_makes_the_same_statements_however_many_votes_on_tool_calls_it_holds(owner):
    # No savepoint (a vote is refused before it writes), no earlier vote to look for at a quorum of
    # one (a pending approval has none), and what the votes change is written for them all at once.
    approvals = parked(owner, 6)
    one, two, three = (
        statements(owner, approvals[:1]),
        statements(owner, approvals[1:3]),
        statements(owner, approvals[3:]),
    )
    assert one == two == three


@pytest.mark.parametrize("per_transaction", [50, 2])
def test_votes_in_one_request_are_independent_and_each_resume_is_sent_once_after_commit(
    owner, stranger, sent, django_capture_on_commit_callbacks, monkeypatch, per_transaction
):
    monkeypatch.setattr(bulk, "MANY_PER_TRANSACTION", per_transaction)
    approved, rejected = parked(owner, 2)
    strangers = parked(stranger, 1)[0]
    body = {
        "decisions": [
            {"id": str(approved.pk), "decision": "approve", "result": {"bytes": 3}},
            {"id": str(approved.pk), "decision": "reject", "reason": "too late"},
            {"id": str(strangers.pk), "decision": "approve"},
            {"id": str(rejected.pk), "decision": "reject", "reason": "not that file"},
            {"id": str(rejected.pk), "decision": "approve", "arguments": {"path": "b.txt"}},
        ]
    }
    with django_capture_on_commit_callbacks(execute=True):
        answer = client_for(owner).post(DECIDE, body, format="json")

    assert answer.status_code == 200
    assert [(item["status"], item.get("error", {}).get("code")) for item in answer.json()["results"]] == [
        ("approved", None),
        ("approved", "already_decided"),
        (None, "not_found"),
        ("rejected", None),
        ("rejected", "already_decided"),
    ]
    assert sorted(plan_id for plan_id, _ in sent) == sorted([approved.plan_id, rejected.plan_id])
    assert Subtask.objects.get(pk=approved.subtask_id).tool_calls[0]["result"] == {"bytes": 3}
    assert Subtask.objects.get(pk=rejected.subtask_id).tool_calls[0]["reason"] == "not that file"
    assert Approval.objects.get(pk=strangers.pk).status == "pending"
    for approval, decision in ((approved, "approve"), (rejected, "reject")):
        events = list(Event.objects.filter(plan_id=approval.plan_id).order_by("seq").values_list("type", flat=True))
        voted = events.index("approval.voted")
        assert events[voted : voted + 2] == ["approval.voted", "approval.resolved"], decision


def test_a_vote_refused_midway_undoes_only_itself(owner, monkeypatch):
    first, second = parked(owner, 2)
    from approvals import services

    real = services.subtask_decision_apply

    def failing_for_the_second(**kwargs):
        if kwargs["approval_id"] == second.pk:
            raise VoteInvalid("result", "refused for the test")
        return real(**kwargs)

    monkeypatch.setattr(services, "subtask_decision_apply", failing_for_the_second)
    answer = client_for(owner).post(DECIDE, approve_all([first, second]), format="json")

    assert [(item["status"], item.get("error", {}).get("code")) for item in answer.json()["results"]] == [
        ("approved", None),
        ("pending", "validation_error"),
    ]
    assert second.votes.count() == 0
    assert Subtask.objects.get(pk=second.subtask_id).status == "waiting_approval"
    assert first.votes.count() == 1
    assert Event.objects.filter(plan_id=first.plan_id, type="approval.resolved").count() == 1
    assert not Event.objects.filter(plan_id=second.plan_id, type__in=["approval.voted", "approval.resolved"]).exists()


def test_held_decisions_found_decided_have_their_transaction_made_again_vote_by_vote(owner, monkeypatch):
    first, second = parked(owner, 2)
    held = bulk.approvals_held

    @contextmanager
    def decided_meanwhile():
        with held():
            yield
            Approval.objects.filter(pk=second.pk).update(status="cancelled")  # undone with the transaction

    monkeypatch.setattr(bulk, "approvals_held", decided_meanwhile)
    with CaptureQueriesContext(connection) as queries:
        answer = client_for(owner).post(DECIDE, approve_all([first, second]), format="json")
    assert [item["status"] for item in answer.json()["results"]] == ["approved", "approved"]
    assert first.votes.count() == second.votes.count() == 1
    # Inside the test's transaction: the first try's and the second's, then one for each vote.
    assert len([query for query in queries if query["sql"].startswith("SAVEPOINT")]) == 2 + 2


def test_refused_votes_cost_no_savepoint_and_leave_the_others(owner, stranger):
    approvals = parked(owner, 3)
    body = approve_all(approvals)
    body["decisions"].insert(0, {"id": str(approvals[2].pk), "decision": "reject", "reason": "no"})
    body["decisions"].insert(2, {"id": str(approvals[0].pk), "decision": "reject", "reason": "too late"})
    with CaptureQueriesContext(connection) as queries:
        answer = client_for(owner).post(DECIDE, body, format="json")
    assert [(item["status"], item.get("error", {}).get("code")) for item in answer.json()["results"]] == [
        ("rejected", None),
        ("approved", None),
        ("approved", "already_decided"),
        ("approved", None),
        ("rejected", "already_decided"),
    ]
    # One transaction (a savepoint inside the test's own): none per vote.
    assert [query["sql"].split()[0] for query in queries if "SAVEPOINT" in query["sql"]] == ["SAVEPOINT", "RELEASE"]


def test_a_thousand_votes_fit_in_one_request_and_more_are_refused(owner):
    ids = [{"id": f"00000000-0000-0000-0000-{index:012d}", "decision": "approve"} for index in range(1001)]
    refused = client_for(owner).post(DECIDE, {"decisions": ids}, format="json")
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "validation_error")
    answer = client_for(owner).post(DECIDE, {"decisions": ids[:1000]}, format="json")
    assert answer.status_code == 200
    assert {item["error"]["code"] for item in answer.json()["results"]} == {"not_found"}


def test_a_batch_inside_a_batch_of_the_same_plan_joins_it(owner):
    plan = plan_submit(owner=owner, data=plan_data(subtask("a")))
    before = plan.events.count()
    with CaptureQueriesContext(connection) as queries, events_batched(plan_id=plan.pk):
        events_append(plan_id=plan.pk, events=[("plan.note", {"n": 1})])
        with events_batched(plan_id=plan.pk):
            events_append(plan_id=plan.pk, events=[("plan.note", {"n": 2})])
        assert plan.events.count() == before  # nothing written yet
    assert list(plan.events.order_by("seq").values_list("payload__n", flat=True))[-2:] == [1, 2]
    assert len([query for query in queries if "INSERT INTO execution_event" in query["sql"]]) == 1


def counters_match_subtasks(plan_id) -> bool:
    counted = Subtask.objects.filter(plan_id=plan_id).aggregate(
        **{counter(status): Count("pk", filter=Q(status=status)) for status in SubtaskStatus.values}
    )
    return Plan.objects.filter(pk=plan_id).values(*counted).get() == counted


def test_the_votes_and_every_plans_events_are_written_once_per_transaction(
    owner, sent, django_capture_on_commit_callbacks
):
    two = plan_submit(owner=owner, data=plan_data(subtask("a"), subtask("b"), requires_approval=False))
    approvals = [*parked(owner, 2), waiting_tool_call(two, key="a"), waiting_tool_call(two, key="b")]
    ExecutionState.objects.filter(plan=two).update(state=ExecState.WAITING_APPROVAL)
    with django_capture_on_commit_callbacks(execute=True), CaptureQueriesContext(connection) as queries:
        answer = client_for(owner).post(DECIDE, approve_all(approvals), format="json")
    assert [item["status"] for item in answer.json()["results"]] == ["approved"] * 4

    inserts = [query["sql"] for query in queries if query["sql"].lstrip().startswith(("INSERT", "WITH"))]
    assert len([sql for sql in inserts if 'INSERT INTO "approvals_vote"' in sql]) == 1
    # The second vote in plan `two` reads that plan again: its events so far are written first.
    assert len([sql for sql in inserts if "INSERT INTO execution_event" in sql]) == 2
    assert sorted(Vote.objects.values_list("approval_id", "user_id", "decision")) == sorted(
        (approval.pk, owner.pk, "approve") for approval in approvals
    )
    for plan_id in {approval.plan_id for approval in approvals}:
        events = list(Event.objects.filter(plan_id=plan_id).order_by("seq").values_list("seq", "type"))
        assert [seq for seq, _ in events] == list(range(1, len(events) + 1))
        assert [kind for _, kind in events].count("approval.resolved") == (2 if plan_id == two.pk else 1)
        assert Plan.objects.get(pk=plan_id).last_event_seq == len(events)
        assert counters_match_subtasks(plan_id)
        assert ExecutionState.objects.get(plan_id=plan_id).state == ExecState.RESUMED
        resumed = StateTransition.objects.filter(execution__plan_id=plan_id, to_state=ExecState.RESUMED)
        assert list(resumed.values_list("from_state", "actor")) == [(ExecState.WAITING_APPROVAL, "owner")]
    resumed_subtasks = Subtask.objects.filter(plan__in=[approval.plan_id for approval in approvals])
    assert sorted(resumed_subtasks.values_list("status", flat=True)) == ["queued"] * 4
    assert len(set(resumed_subtasks.values_list("task_id", flat=True))) == 4
    assert len(sent) == 4


def test_a_batch_across_plans_numbers_each_plans_events_after_its_own(owner, django_capture_on_commit_callbacks):
    first, second = (plan_submit(owner=owner, data=plan_data(subtask("a"))) for _ in range(2))
    last = {plan.pk: plan.events.count() for plan in (first, second)}
    Plan.objects.filter(pk=second.pk).update(callback_url="https://example.com/hook")
    with django_capture_on_commit_callbacks() as callbacks:
        with CaptureQueriesContext(connection) as queries, events_batched_across():
            events_append(plan_id=first.pk, events=[("plan.note", {"n": 1})], counts={SubtaskStatus.QUEUED: 1})
            events_append(plan_id=second.pk, events=[("plan.note", {"n": 2}), ("plan.note", {"n": 3})])
            with events_batched(plan_id=first.pk):  # joins the batch
                events_append(plan_id=first.pk, events=[("plan.note", {"n": 4})], counts={SubtaskStatus.PENDING: -1})
            assert first.events.count() == last[first.pk]  # nothing written yet
        assert len([query for query in queries if "INSERT INTO execution_event" in query["sql"]]) == 1
    hooks = [callback.args for callback in callbacks if getattr(callback, "func", None) is canvas.send_webhooks]

    assert list(first.events.order_by("seq").values_list("seq", "payload__n"))[-2:] == [
        (last[first.pk] + 1, 1),
        (last[first.pk] + 2, 4),
    ]
    assert list(second.events.order_by("seq").values_list("seq", "payload__n"))[-2:] == [
        (last[second.pk] + 1, 2),
        (last[second.pk] + 2, 3),
    ]
    first.refresh_from_db()
    assert (first.queued_count, first.pending_count, first.last_event_seq) == (1, 0, last[first.pk] + 2)
    assert hooks == [(second.pk, [last[second.pk] + 1, last[second.pk] + 2])]


def test_inside_a_batch_across_plans_a_flush_and_a_progress_event_keep_the_order(owner):
    plan = plan_submit(owner=owner, data=plan_data(subtask("a")))
    before = plan.events.count()
    with events_batched_across():
        events_append(plan_id=plan.pk, events=[("plan.note", {"n": 1})])
        events_flush(plan.pk)
        assert plan.events.count() == before + 1
        events_append(plan_id=plan.pk, events=[("plan.note", {"n": 2})])
        events_append(plan_id=plan.pk, events=[("plan.note", {"n": 3})], progress=True)
        events_append(plan_id=plan.pk, events=[("plan.note", {"n": 4})])
    kinds = list(plan.events.order_by("seq").values_list("type", "payload__n"))[before:]
    assert kinds == [("plan.note", 1), ("plan.note", 2), ("plan.note", 3), (PROGRESS_EVENT, None), ("plan.note", 4)]


def test_held_decisions_are_written_together_when_alike_and_refused_when_decided_meanwhile(owner):
    first, second, third, fourth = parked(owner, 4)
    with CaptureQueriesContext(connection) as queries, approvals_held():
        for approval in (first, second):
            approval_transition(approval=approval, to="approved", reason="", decided_by=owner, channel="api", result=1)
        approval_transition(approval=third, to="rejected", reason="no", decided_by=owner, channel="api")
        assert Approval.objects.filter(status="pending").count() == 4  # nothing written yet
        assert first.status == "approved"
    assert len([query for query in queries if "UPDATE approvals_approval SET" in query["sql"]]) == 2
    decided = {
        pk: (status, reason, result, at)
        for pk, status, reason, result, at in Approval.objects.values_list(
            "pk", "status", "reason", "result", "decided_at"
        )
    }
    assert decided[first.pk][:3] == decided[second.pk][:3] == ("approved", "", 1)
    assert decided[first.pk][3] == decided[second.pk][3] == first.decided_at == second.decided_at
    assert decided[third.pk][:3] == ("rejected", "no", None)
    assert decided[fourth.pk][0] == "pending"

    held = approvals_held()
    held.__enter__()
    approval_transition(approval=fourth, to="approved", reason="", decided_by=owner, channel="api")
    Approval.objects.filter(pk=fourth.pk).update(status="cancelled")  # what the locks rule out
    with pytest.raises(AlreadyDecided):
        held.__exit__(None, None, None)
    assert Approval.objects.get(pk=fourth.pk).status == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_two_requests_deciding_the_same_approvals_in_opposite_orders_decide_each_once(owner, sent):
    approvals = parked(owner, 4)
    answers: list[list[str | None]] = []
    barrier = threading.Barrier(2)

    def decide(order: list[Approval], decision: dict) -> None:
        try:
            barrier.wait()
            body = {"decisions": [{"id": str(approval.pk), **decision} for approval in order]}
            answer = client_for(owner).post(DECIDE, body, format="json")
            answers.append([item.get("error", {}).get("code") for item in answer.json()["results"]])
        finally:
            connection.close()

    threads = [
        threading.Thread(target=decide, args=(approvals, {"decision": "approve"})),
        threading.Thread(target=decide, args=(approvals[::-1], {"decision": "reject", "reason": "race"})),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(answers) == 2
    # One request came first and took every approval; the other found each decided.
    assert sorted(set(codes) for codes in answers) == [{None}, {"already_decided"}]
    for approval in approvals:
        assert Event.objects.filter(plan_id=approval.plan_id, type="approval.resolved").count() == 1
    assert len(sent) == 4
