"""CompiledGet reads what the ORM's get() reads; prepared cursors prepare, log and convert as Django's cursors."""

import threading
import uuid

import psycopg
import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Value
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from approvals.models import Approval
from approvals.services import APPROVAL_LOCKED
from common import prepared
from common.compiled import CompiledGet
from common.prepared import PARSE_CACHED_BYTES, PREPARE_THRESHOLD, compact, prepared_cursor
from execution.events import APPEND_SQL
from execution.models import ExecutionState
from execution.run_statements import FINISH_SQL, START_SQL
from execution.selectors import execution_of
from execution.services import plan_submit
from plans.models import Plan
from tests.api.test_approvals import waiting_tool_call
from tests.support.factories import UserFactory, plan_data, subtask

pytestmark = pytest.mark.django_db

WITH_RELATED = Approval.objects.select_related("subtask", "plan__execution", "decided_by")


def values(obj) -> dict:
    return {name: value for name, value in vars(obj).items() if not name.startswith("_")}


@pytest.fixture
def approval():
    plan = plan_submit(owner=UserFactory(), data=plan_data(subtask("a"), requires_approval=False))
    return waiting_tool_call(plan, arguments={"path": "a.txt", "nested": {"n": [1, 2]}})


def test_the_object_and_its_related_objects_are_the_orms(approval):
    expected = WITH_RELATED.get(pk=approval.pk)
    got = CompiledGet(WITH_RELATED).get(str(approval.pk))
    assert type(got) is Approval
    assert values(got) == values(expected)
    assert got.arguments == {"path": "a.txt", "nested": {"n": [1, 2]}}  # JSON converted, as the ORM does
    assert got.requested_at.tzinfo is not None
    assert (got._state.adding, got._state.db) == (False, "default")
    with CaptureQueriesContext(connection) as queries:
        assert values(got.subtask) == values(expected.subtask)
        assert values(got.plan) == values(expected.plan)
        assert values(got.plan.execution) == values(expected.plan.execution)
        assert got.decided_by is None
    assert not queries, "the related objects were read with it"
    assert got.get_deferred_fields() == set()


def test_a_missing_related_row_is_known_missing_without_a_query(approval):
    ExecutionState.objects.filter(plan_id=approval.plan_id).delete()
    got = CompiledGet(WITH_RELATED).get(approval.pk)
    with CaptureQueriesContext(connection) as queries, pytest.raises(Plan.execution.RelatedObjectDoesNotExist):
        got.plan.execution  # noqa: B018
    assert not queries


def test_no_row_raises_does_not_exist_and_a_bad_key_a_validation_error(approval):
    read = CompiledGet(WITH_RELATED)
    with pytest.raises(Approval.DoesNotExist):
        read.get(uuid.uuid4())
    with pytest.raises(ValidationError, match="not a valid UUID"):
        read.get("not-a-uuid")
    assert read.get(approval.pk).pk == approval.pk


@pytest.mark.django_db(transaction=True)
def test_a_locking_read_needs_a_transaction_and_locks(approval):
    with pytest.raises(TransactionManagementError):
        APPROVAL_LOCKED.get(approval.pk)
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        assert APPROVAL_LOCKED.get(approval.pk).plan.pk == approval.plan_id
    assert "FOR UPDATE" in queries[-1]["sql"]
    assert approval.pk.hex in queries[-1]["sql"].replace("-", ""), "logged with its value written in"


def test_a_filtered_or_annotated_queryset_is_refused():
    with pytest.raises(ValueError, match="no filter"):
        CompiledGet(Approval.objects.filter(tool="x")).get(uuid.uuid4())
    with pytest.raises(ValueError, match="no annotation"):
        CompiledGet(Approval.objects.annotate(one=Value(1))).get(uuid.uuid4())


def test_a_read_by_a_one_to_one_relation_is_the_orms_and_a_field_not_unique_is_refused(approval):
    read = CompiledGet(ExecutionState.objects.all(), by="plan")
    assert values(read.get(approval.plan_id)) == values(ExecutionState.objects.get(plan_id=approval.plan_id))
    with pytest.raises(ExecutionState.DoesNotExist):
        read.get(uuid.uuid4())
    with pytest.raises(ValueError, match="unique"):
        CompiledGet(Approval.objects.all(), by="plan")


def test_a_read_by_a_text_key_is_the_orms():
    from rest_framework.authtoken.models import Token

    from api.authentication import TOKEN_WITH_USER

    token = Token.objects.create(user=UserFactory())
    got = TOKEN_WITH_USER.get(token.key)
    assert values(got) == values(Token.objects.get(key=token.key))
    with CaptureQueriesContext(connection) as queries:
        assert values(got.user) == values(token.user)
    assert not queries
    with pytest.raises(Token.DoesNotExist):
        TOKEN_WITH_USER.get("0" * 40)


def test_a_plans_execution_is_read_once_and_cached_as_the_relation_caches_it(approval):
    plan = Plan.objects.get(pk=approval.plan_id)
    with CaptureQueriesContext(connection) as queries:
        execution = execution_of(plan)
        assert execution is not None
        assert (execution_of(plan), plan.execution, execution.plan) == (execution, execution, plan)
    assert len(queries) == 1
    ExecutionState.objects.filter(plan=plan).delete()
    plan = Plan.objects.get(pk=approval.plan_id)
    with CaptureQueriesContext(connection) as queries:
        assert execution_of(plan) is None
        assert execution_of(plan) is None
        with pytest.raises(Plan.execution.RelatedObjectDoesNotExist):
            plan.execution  # noqa: B018
    assert len(queries) == 1


@pytest.mark.django_db(transaction=True)
def test_threads_share_one_compiled_read(approval):
    read = CompiledGet(WITH_RELATED)
    read.get(approval.pk)  # compiled in this thread
    seen: list[object] = []

    def in_thread() -> None:
        try:
            seen.append(read.get(approval.pk).subtask.key)
        finally:
            connection.close()

    threads = [threading.Thread(target=in_thread) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == ["a", "a", "a"]


def test_a_statement_run_often_is_prepared_on_the_connection():
    sql = "SELECT %s::int + 1, now()"
    with prepared_cursor(connection) as cursor:
        for number in range(PREPARE_THRESHOLD + 1):
            cursor.execute(sql, [number])
            total, now = cursor.fetchone()
    assert total == PREPARE_THRESHOLD + 1
    assert now.tzinfo is not None
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", ["%$1::int + 1%"])
        assert cursor.fetchone()[0] == 1


def test_prepared_cursors_are_of_the_class_set_for_them(monkeypatch):
    # OpenTelemetry's traced cursor class, when traces are on (config/telemetry.py).
    executed: list[str] = []

    class Traced(psycopg.Cursor):
        def execute(self, query, params=None, **kwargs):
            executed.append(str(query))
            return super().execute(query, params, **kwargs)

    monkeypatch.setattr(prepared, "_cursor_class", psycopg.Cursor)
    prepared.prepared_cursor_class_set(Traced)
    with prepared_cursor(connection) as cursor:
        cursor.execute("SELECT %s::int", [1])
        assert cursor.fetchone() == (1,)
    assert executed == ["SELECT %s::int"]


def test_a_statement_of_varying_text_stays_on_djangos_cursor():
    sql = "SELECT %s::int + 2"
    with prepared_cursor(connection, prepare=False) as cursor:
        for number in range(PREPARE_THRESHOLD + 1):
            cursor.execute(sql, [number])
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", ["%::int + 2%"])
        assert cursor.fetchone()[0] == 0


def test_compact_drops_comment_lines_and_indentation_and_refuses_a_text_psycopg_would_parse_each_time():
    sql = """
    WITH a AS (
        -- a comment
        SELECT 1 AS one -- kept: not a line of its own
    )
    SELECT one FROM a
    """
    assert compact(sql) == "WITH a AS (\nSELECT 1 AS one -- kept: not a line of its own\n)\nSELECT one FROM a"
    with pytest.raises(ValueError, match="parsed on every execution"):
        compact("SELECT " + "1 + " * PARSE_CACHED_BYTES + "1")


@pytest.mark.parametrize("sql", [START_SQL, FINISH_SQL, APPEND_SQL])
def test_the_hot_statements_are_short_enough_for_psycopg_to_keep_their_parse(sql):
    assert len(sql.encode()) <= PARSE_CACHED_BYTES
