"""Approval endpoints: list and filters, decisions, conflicts, and who may see and decide."""

import threading
import time
from datetime import timedelta
from uuid import uuid4

import psycopg
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.errors import AlreadyDecided
from approvals.models import Approval, Vote
from approvals.services import approval_request
from approvals.transitions import approval_transition
from execution.engine.plan_flow import plan_lock
from execution.models import ExecState, ExecutionState
from execution.services import plan_submit
from plans.models import Subtask
from tests.api.conftest import client_for
from tests.api.test_plans import assert_error
from tests.support.factories import plan_data, plan_recount, subtask

pytestmark = pytest.mark.django_db

APPROVALS = "/api/v1/approvals/"


def waiting_tool_call(plan, key="a", tool="write_file", arguments=None):
    """Put a subtask in waiting_approval with a pending tool call, as a worker would."""
    subtask_row = Subtask.objects.get(plan=plan, key=key)
    entry = {"tool": tool, "arguments": arguments or {}, "requires_approval": True, "status": "pending", "result": None}
    Subtask.objects.filter(pk=subtask_row.pk).update(status="waiting_approval", attempts=1, tool_calls=[entry])
    plan_recount(plan_id=plan.pk)
    subtask_row.refresh_from_db()
    with transaction.atomic():
        approval = approval_request(
            plan=plan_lock(plan.pk), kind="tool_call", subtask=subtask_row, call_index=0, tool=tool, arguments=arguments
        )
    entry["approval_id"] = str(approval.pk)
    Subtask.objects.filter(pk=subtask_row.pk).update(tool_calls=[entry])
    return approval


@pytest.fixture
def plan(owner):
    return plan_submit(
        owner=owner, data=plan_data(subtask("a"), subtask("b"), session_id="chat-9", requires_approval=False)
    )


@pytest.fixture
def tool_approval(plan):
    return waiting_tool_call(plan, arguments={"path": "a.txt"})


def test_list_shows_the_fields_and_filters(api, owner, plan, tool_approval):
    draft = plan_submit(owner=owner, data=plan_data(subtask("x")))
    page = api.get(APPROVALS).json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 2
    first = page["results"][0]
    assert first["id"] == str(tool_approval.pk)
    assert (first["kind"], first["tool"], first["arguments"], first["status"]) == (
        "tool_call",
        "write_file",
        {"path": "a.txt"},
        "pending",
    )
    assert (first["plan"], first["session_id"], first["subtask_key"]) == (str(plan.pk), "chat-9", "a")
    assert first["expires_at"] is not None
    assert [a["kind"] for a in api.get(APPROVALS, {"kind": "plan"}).json()["results"]] == ["plan"]
    assert api.get(APPROVALS, {"plan": str(draft.pk)}).json()["count"] == 1
    assert api.get(APPROVALS, {"session_id": "chat-9"}).json()["count"] == 1
    assert api.get(APPROVALS, {"status": "approved"}).json()["count"] == 0
    assert_error(api.get(APPROVALS, {"kind": "bogus"}), 400, "validation_error")


def test_approve_with_edited_arguments_and_a_result(api, tool_approval):
    response = api.post(
        f"{APPROVALS}{tool_approval.pk}/approve/",
        {"arguments": {"path": "b.txt"}, "result": {"bytes": 10}, "reason": "fine"},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["decided_by"], body["edited_arguments"], body["result"]) == (
        "approved",
        "owner",
        {"path": "b.txt"},
        {"bytes": 10},
    )
    subtask_row = Subtask.objects.get(pk=tool_approval.subtask_id)
    assert subtask_row.status == "queued"
    assert subtask_row.tool_calls[0]["approved_arguments"] == {"path": "b.txt"}
    assert subtask_row.tool_calls[0]["result"] == {"bytes": 10}


def test_an_approve_at_a_quorum_of_one_writes_its_vote_with_the_decision_and_reads_no_vote_back(owner, tool_approval):
    # The plan's, the approval's, the subtask's and the execution's locks with their read in one
    # statement, then three writes (decision and vote, subtask, the events with the execution's
    # change and its record); the answer shows the vote without reading it again.
    ExecutionState.objects.filter(plan_id=tool_approval.plan_id).update(state=ExecState.WAITING_APPROVAL)
    with CaptureQueriesContext(connection) as queries:
        body = client_for(owner).post(f"{APPROVALS}{tool_approval.pk}/approve/", {"reason": "ok"}, format="json").json()
    statements = [q["sql"] for q in queries if "SAVEPOINT" not in q["sql"] and "authtoken" not in q["sql"]]
    assert len(statements) == 4, "\n".join(statements)
    assert statements[0].endswith(
        'FOR UPDATE OF "plans_plan", "approvals_approval", "plans_subtask", "execution_executionstate"'
    ), "the plan's row first: the one lock order"
    last = ExecutionState.objects.get(plan_id=tool_approval.plan_id).transitions.last()
    assert (last.from_state, last.to_state) == (ExecState.WAITING_APPROVAL, ExecState.RESUMED)
    assert not [sql for sql in statements if sql.startswith("SELECT") and "approvals_vote" in sql]
    assert [(vote["user"], vote["decision"], vote["reason"]) for vote in body["votes"]] == [("owner", "approve", "ok")]
    vote = Vote.objects.get(approval=tool_approval)
    assert body["votes"][0]["at"] == vote.at.isoformat().replace("+00:00", "Z")
    assert (vote.user, vote.channel) == (owner, "api")


@pytest.mark.django_db(transaction=True)
def test_the_resumed_run_is_sent_once_the_answer_is_ready(owner, tool_approval, monkeypatch):
    # Sent as its transaction committed, the run started on a worker while the answer was still built.
    from api.approvals import views
    from execution import canvas

    order: list[str] = []
    shown = views._shown
    monkeypatch.setattr(views, "_shown", lambda approval: order.append("answer") or shown(approval))
    monkeypatch.setattr(canvas.current_app.amqp, "send_task_message", lambda *args, **kwargs: order.append("run"))
    response = client_for(owner).post(f"{APPROVALS}{tool_approval.pk}/approve/", {}, format="json")
    assert response.status_code == 200
    assert order == ["answer", "run"]


def test_a_decision_found_made_meanwhile_writes_no_vote(owner, tool_approval):
    stale = Approval.objects.select_related("subtask").get(pk=tool_approval.pk)
    Approval.objects.filter(pk=tool_approval.pk).update(status="rejected")
    vote = Vote(approval=stale, user=owner, decision="approve", channel="api")
    with pytest.raises(AlreadyDecided):
        approval_transition(approval=stale, to="approved", votes=[vote], reason="", decided_by=owner, channel="api")
    assert stale.status == "rejected"
    assert not Vote.objects.exists()
    assert vote.pk is None


def test_reject_needs_a_reason(api, tool_approval):
    assert_error(api.post(f"{APPROVALS}{tool_approval.pk}/reject/", {}, format="json"), 400, "validation_error")
    body = api.post(f"{APPROVALS}{tool_approval.pk}/reject/", {"reason": "no"}, format="json").json()
    assert (body["status"], body["reason"]) == ("rejected", "no")


def test_a_second_decision_is_already_decided(api, tool_approval):
    api.post(f"{APPROVALS}{tool_approval.pk}/approve/", {}, format="json")
    for path in ("approve/", "reject/"):
        error = assert_error(
            api.post(f"{APPROVALS}{tool_approval.pk}/{path}", {"reason": "late"}, format="json"), 409, "already_decided"
        )
        assert error["details"] == {"status": "approved"}


@pytest.mark.django_db(transaction=True)
def test_concurrent_decisions_through_the_api_have_one_winner(owner, plan):
    approval = waiting_tool_call(plan)
    statuses: list[int] = []
    barrier = threading.Barrier(2)

    def decide(path: str) -> None:
        try:
            barrier.wait()
            statuses.append(
                client_for(owner)
                .post(f"{APPROVALS}{approval.pk}/{path}", {"reason": "race"}, format="json")
                .status_code
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=(path,)) for path in ("approve/", "reject/")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 409]
    assert plan.events.filter(type="approval.resolved").count() == 1


def _waits_for_a_lock() -> bool:
    """Wait until another session waits for a row lock; return whether one did."""
    waiting = "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as watcher:
        for _ in range(500):
            if watcher.execute(waiting).fetchall():
                return True
            time.sleep(0.01)
    return False


@pytest.mark.django_db(transaction=True)
def test_an_approve_that_waited_for_the_plans_lock_reads_the_rows_as_their_holder_left_them(owner, plan):
    # One statement locks the plan, the approval, the subtask and the execution: after its wait for
    # the plan's lock, each row is read as committed meanwhile (the execution paused here), not as
    # the statement first saw it.
    approval = waiting_tool_call(plan)
    ExecutionState.objects.filter(plan=plan).update(state=ExecState.WAITING_APPROVAL)
    holder = psycopg.connect(**connection.get_connection_params())
    holder.execute("SELECT id FROM plans_plan WHERE id = %s FOR UPDATE", [plan.pk])
    statuses: list[int] = []

    def approve() -> None:
        try:
            statuses.append(client_for(owner).post(f"{APPROVALS}{approval.pk}/approve/", {}, format="json").status_code)
        finally:
            connection.close()

    thread = threading.Thread(target=approve)
    thread.start()
    try:
        assert _waits_for_a_lock(), "the approve never waited for the plan's lock"
        holder.execute("UPDATE execution_executionstate SET state = %s WHERE plan_id = %s", [ExecState.PAUSED, plan.pk])
        holder.commit()
    finally:
        holder.close()  # a lock still held would keep the test's database from being emptied
        thread.join()

    assert statuses == [200]
    assert ExecutionState.objects.get(plan=plan).state == ExecState.PAUSED  # not resumed over the pause
    resumed = Subtask.objects.get(pk=approval.subtask_id)
    assert (resumed.status, resumed.task_id) == ("queued", "")  # queued, and held while the plan is paused


def test_bad_decision_bodies(api, tool_approval):
    assert_error(
        api.post(f"{APPROVALS}{tool_approval.pk}/approve/", {"arguments": [1]}, format="json"), 400, "validation_error"
    )
    assert Approval.objects.get(pk=tool_approval.pk).status == "pending"


def test_approving_a_plan_approval_approves_the_plan(api, owner):
    draft = plan_submit(owner=owner, data=plan_data(subtask("a"), auto_execute=False))
    approval = Approval.objects.get(plan=draft)
    assert api.post(f"{APPROVALS}{approval.pk}/approve/", {}, format="json").status_code == 200
    draft.refresh_from_db()
    assert draft.status == "approved"


def test_rejecting_a_plan_approval_cancels_the_plan(api, owner):
    draft = plan_submit(owner=owner, data=plan_data(subtask("a")))
    approval = Approval.objects.get(plan=draft)
    api.post(f"{APPROVALS}{approval.pk}/reject/", {"reason": "too risky"}, format="json")
    draft.refresh_from_db()
    assert draft.status == "cancelled"
    assert draft.subtasks.get().status == "cancelled"


class TestPermissions:
    def test_anonymous_gets_401(self, tool_approval):
        assert_error(client_for().get(APPROVALS), 401, "not_authenticated")
        assert_error(client_for().post(f"{APPROVALS}{tool_approval.pk}/approve/"), 401, "not_authenticated")

    @pytest.mark.parametrize("who", ["stranger", "staff"])
    def test_others_get_404(self, tool_approval, request, who):
        other = client_for(request.getfixturevalue(who))
        assert other.get(APPROVALS).json()["count"] == 0
        assert_error(other.get(f"{APPROVALS}{tool_approval.pk}/"), 404, "not_found")
        assert_error(other.post(f"{APPROVALS}{tool_approval.pk}/approve/", {}, format="json"), 404, "not_found")
        assert_error(
            other.post(f"{APPROVALS}{tool_approval.pk}/reject/", {"reason": "x"}, format="json"), 404, "not_found"
        )
        assert Approval.objects.get(pk=tool_approval.pk).status == "pending"

    def test_others_get_404_whatever_else_would_refuse_their_vote(self, plan, tool_approval, stranger, owner):
        other = client_for(stranger)
        url = f"{APPROVALS}{tool_approval.pk}/"
        assert_error(other.post(f"{url}approve/", {"arguments": "not an object"}, format="json"), 404, "not_found")
        malformed = other.post(f"{url}reject/", "{", content_type="application/json")
        assert_error(malformed, 404, "not_found")
        overdue = timezone.now() - timedelta(seconds=1)
        Approval.objects.filter(pk=tool_approval.pk).update(expires_at=overdue)
        assert_error(other.post(f"{url}approve/", {}, format="json"), 404, "not_found")
        assert Approval.objects.get(pk=tool_approval.pk).status == "pending"  # not expired by an outsider's vote
        assert_error(client_for(owner).post(f"{url}approve/", {}, format="json"), 409, "already_decided")
        assert_error(other.post(f"{url}approve/", {}, format="json"), 404, "not_found")
        assert_error(other.post(f"{APPROVALS}{uuid4()}/approve/", {}, format="json"), 404, "not_found")
        assert_error(client_for(owner).post(f"{APPROVALS}{uuid4()}/reject/", {}, format="json"), 404, "not_found")

    def test_a_vote_that_counts_reads_nothing_about_who_may_see_it(self, tool_approval, owner):
        with CaptureQueriesContext(connection) as queries:
            answer = client_for(owner).post(f"{APPROVALS}{tool_approval.pk}/approve/", {}, format="json")
        assert answer.status_code == 200
        assert not [query for query in queries if "auth_group" in query["sql"]]

    def test_an_approver_decides_anyones_approval(self, tool_approval, approver):
        client = client_for(approver)
        assert client.get(APPROVALS).json()["count"] == 1
        body = client.post(f"{APPROVALS}{tool_approval.pk}/approve/", {"result": "ok"}, format="json").json()
        assert (body["status"], body["decided_by"]) == ("approved", "approver")
