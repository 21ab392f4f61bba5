"""POST /approvals/decide/: many votes in a few transactions, each independent, in a fixed number of statements each."""

import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from approvals import bulk
from approvals.errors import VoteInvalid
from approvals.models import Approval
from execution import canvas
from execution.events import events_append, events_batched
from execution.models import Event
from execution.services import plan_submit
from plans.models import Subtask
from tests.api.conftest import client_for
from tests.api.test_approvals import waiting_tool_call
from tests.support.factories import plan_data, subtask

pytestmark = pytest.mark.django_db

DECIDE = "/api/v1/approvals/decide/"
# The vote, the approval, the subtask, the events: no savepoint (a vote is refused before it writes)
# and, at a quorum of one, no earlier vote to look for (a pending approval has none).
STATEMENTS_PER_VOTE = 4


@pytest.fixture
def sent(monkeypatch):
    """Record the resumes sent instead of sending them."""
    runs: list[tuple] = []
    monkeypatch.setattr(canvas, "send_runs", lambda plan_id, batch, **options: runs.append((plan_id, batch)))
    return runs


def parked(owner, count: int) -> list[Approval]:
    """Return `count` plans' pending tool calls, one each."""
    plans = [plan_submit(owner=owner, data=plan_data(subtask("a"), requires_approval=False)) for _ in range(count)]
    return [waiting_tool_call(plan) for plan in plans]


def approve_all(approvals: list[Approval]) -> dict:
    return {"decisions": [{"id": str(approval.pk), "decision": "approve", "result": "ok"} for approval in approvals]}


def statements(user, approvals: list[Approval]) -> int:
    with CaptureQueriesContext(connection) as queries:
        answer = client_for(user).post(DECIDE, approve_all(approvals), format="json")
    assert [item["status"] for item in answer.json()["results"]] == ["approved"] * len(approvals)
    return len(queries)


def test_each_vote_costs_the_same_few_statements_however_many_come(owner):
    approvals = parked(owner, 6)
    one, two, three = (
        statements(owner, approvals[:1]),
        statements(owner, approvals[1:3]),
        statements(owner, approvals[3:]),
    )
    assert two - one == three - two == STATEMENTS_PER_VOTE


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
