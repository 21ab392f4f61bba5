"""The inbox and the admin's queue answer in the same queries however many approvals wait, and read no more rows
than they show: the pending approvals themselves, not every approval's id; votes counted for the page only."""

import json

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from approvals.models import QUEUE_ORDER, Approval, Vote
from execution.services import plan_submit
from tests.api.conftest import client_for
from tests.support.factories import UserFactory, plan_data, subtask

pytestmark = pytest.mark.django_db

# The plans of the "team" group's members wait for two of the "rev" group; the others' for their owner or a decider.
RULES = {
    "rules": [
        {
            "name": "reviewers",
            "match": {"kind": "plan", "requester_group": "team"},
            "decision": "ask",
            "approvers": ["group:rev"],
            "quorum": 2,
        }
    ]
}
LISTS = [
    ("approver", "/api/v1/approvals/?status=pending"),
    ("approver", "/api/v1/approvals/?awaiting=me"),
    ("reviewer", "/api/v1/approvals/?awaiting=me"),
]
QUEUE = "/admin/approvals/approval/?status__exact=pending"


@pytest.fixture
def reviewer(settings, tmp_path):
    """A member of the group a rule names as the approvers of every plan approval."""
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(RULES))
    settings.APPROVALS_POLICY_FILE = str(path)
    user = UserFactory(username="reviewer")
    Group.objects.create(name="rev").user_set.add(user)
    return user


def wait(owner, stranger, count: int) -> None:
    """Submit `count` plans of each owner, waiting for their approval; the reviewers' with one vote already."""
    Group.objects.get_or_create(name="team")[0].user_set.add(owner)
    voter = UserFactory()
    for _ in range(count):
        approval = plan_submit(owner=owner, data=plan_data(subtask("a"))).approvals.get()
        Vote.objects.create(approval=approval, user=voter, decision="approve", channel="api")
        plan_submit(owner=stranger, data=plan_data(subtask("a")))


def queries(client, path: str) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200
    return [query["sql"] for query in captured.captured_queries]


@pytest.fixture
def users(approver, reviewer, owner):
    admin = Client()
    admin.force_login(approver)
    return {"approver": client_for(approver), "reviewer": client_for(reviewer), "admin": admin}


def test_the_lists_and_the_queue_answer_in_the_same_queries_with_more_approvals_waiting(
    users, owner, stranger, django_assert_num_queries
):
    wait(owner, stranger, 1)
    paths = [*LISTS, ("admin", QUEUE)]
    for who, path in paths:  # once first: what a client's user caches (its permissions) is read once
        users[who].get(path)
    counts = [len(queries(users[who], path)) for who, path in paths]
    wait(owner, stranger, 4)
    for (who, path), count in zip(paths, counts, strict=True):
        with django_assert_num_queries(count):
            assert users[who].get(path).status_code == 200


def test_the_inbox_filters_the_pending_approvals_not_a_list_of_every_id(users, owner, stranger):
    wait(owner, stranger, 2)
    for who, path in LISTS[1:]:
        for sql in queries(users[who], path):
            if "approvals_approval" in sql:
                assert '"approvals_approval"."id" IN (SELECT' not in sql, sql


def test_the_queue_counts_votes_for_its_page_only(users, owner, stranger):
    wait(owner, stranger, 2)
    counts = [sql for sql in queries(users["admin"], QUEUE) if sql.startswith("SELECT COUNT(*)")]
    assert counts
    for sql in counts:
        assert "approvals_vote" not in sql, sql
        assert "GROUP BY" not in sql, sql


def test_the_queue_order_is_read_from_its_index(owner, stranger):
    wait(owner, stranger, 2)
    sql, params = Approval.objects.filter(status="pending").order_by(*QUEUE_ORDER, "-pk")[:100].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "approval_queue" in plan, plan
