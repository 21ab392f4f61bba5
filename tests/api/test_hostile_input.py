"""Hostile bodies through the API: each gets the documented error code, and not one row changes."""

import json
from contextlib import contextmanager

import pytest
import requests
from rest_framework.authtoken.models import Token

from approvals.models import Approval
from execution.models import Event, StateTransition
from plans.models import Plan, Subtask, SubtaskDependency
from plans.shape import MAX_BODY_DEPTH, MAX_JSON_DEPTH
from tests.api.test_approvals import waiting_tool_call
from tests.api.test_plans import PLANS, assert_error
from tests.support.factories import plan_data, subtask

pytestmark = pytest.mark.django_db

APPROVALS = "/api/v1/approvals/"


def rows() -> dict[str, int]:
    return {
        model.__name__: model.objects.count()
        for model in (Plan, Subtask, SubtaskDependency, Approval, Event, StateTransition)
    }


@contextmanager
def nothing_changes():
    """Assert the block writes no plan, subtask, dependency, approval, event or transition."""
    before = rows()
    yield
    assert rows() == before


def nested(levels: int, leaf=None):
    """Return `levels` lists inside each other, innermost holding `leaf`."""
    value = [leaf] if leaf is not None else []
    for _ in range(levels - 1):
        value = [value]
    return value


def post_raw(api, body: bytes | str, content_type: str = "application/json"):
    return api.post(PLANS, body, content_type=content_type)


def one(**fields) -> dict:
    """Return a valid one-subtask plan with these plan fields."""
    return plan_data(subtask("a"), **fields)


@pytest.mark.parametrize(
    "body",
    [
        b'{"goal": "x", "subtasks": [',
        b"{not json",
        b'{"goal": "x"} trailing',
        b'{"goal": NaN, "subtasks": []}',
        b'{"goal": "x", "max_parallel": Infinity, "subtasks": []}',
        b'{"goal": "\xff\xfe"}',
        b"null",
        b"[1, 2]",
        b'"a plan"',
        b"",
    ],
)
def test_malformed_json_is_a_validation_error(api, body):
    with nothing_changes():
        assert_error(post_raw(api, body), 400, "validation_error")


def test_an_unknown_charset_is_a_validation_error(api):
    with nothing_changes():
        error = assert_error(
            post_raw(api, json.dumps(one()), "application/json; charset=bz2_codec"), 400, "validation_error"
        )
    assert "charset" in error["message"]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"goal": 5, "subtasks": [subtask("a")]}, "goal"),
        ({"goal": ["x"], "subtasks": [subtask("a")]}, "goal"),
        ({"goal": "x", "subtasks": "a"}, "subtasks"),
        ({"goal": "x", "subtasks": [5]}, "subtasks[0]"),
        (one(max_parallel="3"), "max_parallel"),
        (one(max_parallel=True), "max_parallel"),
        (one(max_parallel=0), "max_parallel"),
        (one(requires_approval="yes"), "requires_approval"),
        (one(failure_policy="whatever"), "failure_policy"),
        (one(metadata=[1]), "metadata"),
        (one(callback_url="javascript:alert(1)"), "callback_url"),
        (plan_data(subtask("a", input="x")), "subtasks[0].input"),
        (plan_data({**subtask("a"), "depends_on": "b"}), "subtasks[0].depends_on"),
        (plan_data(subtask("a", timeout_s=1.5)), "subtasks[0].timeout_s"),
        (plan_data(subtask("a", max_retries=-1)), "subtasks[0].max_retries"),
        (plan_data(subtask("has space")), "subtasks[0].key"),
        (plan_data(subtask("../../etc")), "subtasks[0].key"),
        (plan_data(subtask("k" * 101)), "subtasks[0].key"),
        (plan_data({**subtask("a"), "surprise": 1}), "subtasks[0].surprise"),
        (one(owner="someone-else"), "owner"),
    ],
)
def test_wrong_types_are_validation_errors_naming_the_field(api, data, field):
    with nothing_changes():
        error = assert_error(api.post(PLANS, data, format="json"), 400, "validation_error")
    assert field in error["details"]


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        ({}, {"goal", "subtasks"}),
        ({"goal": "x"}, {"subtasks"}),
        ({"goal": "x", "subtasks": []}, {"subtasks"}),
        ({"goal": "x", "subtasks": [{}]}, {"subtasks[0].key", "subtasks[0].description", "subtasks[0].agent"}),
        ({"goal": "   ", "subtasks": [subtask("a")]}, {"goal"}),
    ],
)
def test_missing_fields_are_validation_errors_naming_each(api, data, fields):
    with nothing_changes():
        error = assert_error(api.post(PLANS, data, format="json"), 400, "validation_error")
    assert fields <= set(error["details"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"goal": "x\\u0000y", "subtasks": [%s]}', "goal"),
        ('{"goal": "x", "session_id": "\\u0000", "subtasks": [%s]}', "session_id"),
        ('{"goal": "\\ud800 half a pair", "subtasks": [%s]}', "goal"),
        ('{"goal": "x", "metadata": {"k\\u0000": 1}, "subtasks": [%s]}', "metadata"),
        ('{"goal": "x", "max_parallel": 1e400, "subtasks": [%s]}', "max_parallel"),
        ('{"goal": "x", "metadata": {"n": 1e400}, "subtasks": [%s]}', "metadata"),
        ('{"goal": "x", "metadata": {"n": -1e999}, "subtasks": [%s]}', "metadata"),
        ('{"goal": "x", "subtasks": [%s], "metadata": {"deep": ["\\udfff"]}}', "metadata"),
    ],
)
def test_what_postgresql_cannot_store_is_a_validation_error(api, body, field):
    with nothing_changes():
        error = assert_error(post_raw(api, body % json.dumps(subtask("a"))), 400, "validation_error")
    assert field in error["details"]


def test_an_input_postgresql_cannot_store_is_a_validation_error(api):
    body = json.dumps(plan_data(subtask("a", input={"result": "PLACEHOLDER"}))).replace("PLACEHOLDER", "\\u0000")
    with nothing_changes():
        error = assert_error(post_raw(api, body), 400, "validation_error")
    assert error["details"] == {"subtasks[0].input": ["A string contains a NUL character (\\u0000)."]}


def test_ten_thousand_and_one_subtasks_are_too_many(api):
    many = [subtask(f"s{i}") for i in range(10_001)]
    with nothing_changes():
        error = assert_error(api.post(PLANS, plan_data(*many), format="json"), 400, "too_many_subtasks")
    assert error["details"] == {"limit": 10_000, "count": 10_001}


def test_a_body_over_the_size_limit_is_refused_before_it_is_parsed(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps(plan_data(*[subtask(f"s{i}") for i in range(300)]))
    assert len(body) > 10_000
    with nothing_changes():
        error = assert_error(post_raw(api, body), 413, "request_too_large")
    assert "10000 bytes" in error["message"]
    assert error["details"] == {"limit": 10_000}
    # Just under the limit is fine.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = len(body)
    assert post_raw(api, body).status_code == 201


def test_decisions_are_held_to_the_size_limit_too(api, owner, settings):
    plan = Plan.objects.get(pk=api.post(PLANS, one(requires_approval=False), format="json").json()["id"])
    approval = waiting_tool_call(plan)
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    with nothing_changes():
        assert_error(
            api.post(f"{APPROVALS}{approval.pk}/approve/", {"result": "x" * 2000}, format="json"),
            413,
            "request_too_large",
        )
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def body_holding(where: str, raw: str) -> str:
    """Return a plan's JSON text with `raw` (JSON text) as a value inside a subtask's input or the metadata."""
    marker = '"MARKER"'
    data = plan_data(subtask("a", input={"result": "MARKER"})) if where == "input" else one(metadata={"m": "MARKER"})
    return json.dumps(data).replace(marker, raw)


@pytest.mark.parametrize("where", ["input", "metadata"])
@pytest.mark.parametrize("levels", [10_000, MAX_BODY_DEPTH + 1])
def test_json_nested_past_what_a_body_may_hold_is_a_validation_error(api, where, levels):
    with nothing_changes():
        error = assert_error(post_raw(api, body_holding(where, "[" * levels + "]" * levels)), 400, "validation_error")
    assert error["message"] == f"JSON parse error - nested more than {MAX_BODY_DEPTH} levels deep."


@pytest.mark.parametrize("where", ["input", "metadata"])
def test_json_nested_past_the_value_limit_is_a_validation_error_naming_the_field(api, where):
    deep = {"inner": nested(MAX_JSON_DEPTH)}
    data = plan_data(subtask("a", input=deep)) if where == "input" else plan_data(subtask("a"), metadata=deep)
    with nothing_changes():
        error = assert_error(api.post(PLANS, data, format="json"), 400, "validation_error")
    field = "subtasks[0].input" if where == "input" else "metadata"
    assert error["details"] == {field: [f"Nested more than {MAX_JSON_DEPTH} levels deep."]}


def test_json_nested_to_the_value_limit_is_stored_and_read_back(api):
    deep = nested(MAX_JSON_DEPTH - 1, leaf="bottom")
    response = api.post(PLANS, plan_data(subtask("a", input={"result": deep}), metadata={"m": deep}), format="json")
    assert response.status_code == 201, response.content
    plan = api.get(f"{PLANS}{response.json()['id']}/").json()
    assert plan["metadata"] == {"m": deep}
    assert plan["subtasks"][0]["input"] == {"result": deep}


@pytest.mark.parametrize(
    ("subtasks", "code"),
    [
        ([subtask("a", "c"), subtask("b", "a"), subtask("c", "b")], "cyclic_dependencies"),
        ([subtask("a", "a")], "cyclic_dependencies"),
        ([subtask("a", "ghost")], "unknown_dependency"),
        ([subtask("a"), subtask("a")], "duplicate_key"),
        ([subtask("a", agent="wizard")], "unknown_agent"),
        ([subtask("a", agent="'; DROP TABLE plans_plan; --")], "unknown_agent"),
    ],
)
def test_plan_rules_have_their_codes(api, subtasks, code):
    with nothing_changes():
        assert_error(api.post(PLANS, plan_data(*subtasks), format="json"), 400, code)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("goal=x&subtasks=a", "application/x-www-form-urlencoded"),
        ("goal: x", "text/plain"),
        ("<plan><goal>x</goal></plan>", "application/xml"),
        ('{"goal": "x"}', "application/json-patch+json"),
    ],
)
def test_a_body_that_is_not_json_is_an_unsupported_media_type(api, body, content_type):
    with nothing_changes():
        error = assert_error(post_raw(api, body, content_type), 415, "unsupported_media_type")
    assert content_type.split(";")[0] in error["message"]


def test_a_multipart_upload_is_an_unsupported_media_type(api):
    with nothing_changes():
        assert_error(api.post(PLANS, {"goal": "x", "file": b"..."}, format="multipart"), 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "body",
    [
        {"result": {"deep": nested(MAX_JSON_DEPTH)}},
        {"arguments": {"deep": nested(MAX_JSON_DEPTH)}},
        '{"result": "nul \\u0000 here"}',
        '{"arguments": {"path": "\\ud800"}}',
        '{"result": 1e400}',
        '{"reason": "nul \\u0000 here"}',
        "[" * 10_000 + "]" * 10_000,
    ],
)
def test_decisions_postgresql_cannot_store_are_validation_errors(api, body):
    plan = Plan.objects.get(pk=api.post(PLANS, one(requires_approval=False), format="json").json()["id"])
    approval = waiting_tool_call(plan)
    raw = body if isinstance(body, str) else json.dumps(body)
    with nothing_changes():
        assert_error(
            api.post(f"{APPROVALS}{approval.pk}/approve/", raw, content_type="application/json"),
            400,
            "validation_error",
        )
    assert Approval.objects.get(pk=approval.pk).status == "pending"


@pytest.mark.parametrize("body", ["[]", "null", '"approve"', "0", '[{"reason": "x"}]'])
def test_an_approve_whose_body_is_not_an_object_is_a_validation_error(api, body):
    # An empty object asks for the defaults without a serializer: anything else empty is still checked.
    plan = Plan.objects.get(pk=api.post(PLANS, one(requires_approval=False), format="json").json()["id"])
    approval = waiting_tool_call(plan)
    with nothing_changes():
        assert_error(
            api.post(f"{APPROVALS}{approval.pk}/approve/", body, content_type="application/json"),
            400,
            "validation_error",
        )
    assert api.post(f"{APPROVALS}{approval.pk}/approve/", "{}", content_type="application/json").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_under_uvicorn_a_body_over_the_default_limit_is_413_and_a_deep_one_400(web, owner):
    """The same answers from the server as users run it (ASGI), with the configured 32 MB limit."""
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}", "Content-Type": "application/json"}
    limit = 32 * 1024 * 1024
    too_big = json.dumps(one(metadata={"padding": "x" * limit}))
    deep = body_holding("input", "[" * 100_000 + "]" * 100_000)
    with nothing_changes():
        big = requests.post(f"{web.url}{PLANS}", data=too_big, headers=headers, timeout=60)
        nested_body = requests.post(f"{web.url}{PLANS}", data=deep, headers=headers, timeout=60)
    assert (big.status_code, big.json()["error"]["code"]) == (413, "request_too_large")
    assert big.json()["error"]["details"] == {"limit": limit}
    assert (nested_body.status_code, nested_body.json()["error"]["code"]) == (400, "validation_error")
