"""The submission shape is declared once: the API schema shows every limit the validator enforces."""

import pytest
from django.test import Client

from plans.services import plan_limits
from plans.shape import Field, plan_fields, subtask_fields
from plans.validation import PlanInvalid, validate_plan
from tests.support.factories import plan_data, subtask

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schemas(django_db_blocker) -> dict:
    with django_db_blocker.unblock():
        schema = Client().get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    return schema["components"]["schemas"]


def limits_of(field: Field) -> dict:
    """Return the JSON Schema keywords a field's limits become."""
    expected = {
        "maxLength": field.max_length,
        "minimum": field.minimum,
        "maximum": field.maximum,
        "pattern": field.pattern,
        "maxItems": field.max_items,
    }
    return {keyword: value for keyword, value in expected.items() if value is not None}


def shown(property_schema: dict) -> dict:
    """Return the limits a schema property shows, wherever drf-spectacular put them (a oneOf for URLs)."""
    found = {
        key: property_schema[key]
        for key in ("maxLength", "minimum", "maximum", "pattern", "maxItems")
        if key in property_schema
    }
    for option in property_schema.get("oneOf", []):
        found.update({key: option[key] for key in ("maxLength",) if option.get(key)})
    return found


@pytest.mark.parametrize(
    ("component", "fields"),
    [("PlanSubmitRequest", plan_fields), ("SubtaskSubmitRequest", subtask_fields)],
)
def test_the_schema_shows_every_field_its_limits_and_what_is_required(schemas, component, fields):
    declared = fields(plan_limits())
    schema = schemas[component]
    assert set(schema["properties"]) == {field.name for field in declared}
    assert set(schema["required"]) == {field.name for field in declared if field.required}
    for field in declared:
        assert shown(schema["properties"][field.name]) == limits_of(field), field.name


def test_the_validator_refuses_each_value_just_past_a_declared_limit():
    limits = plan_limits()
    for field in subtask_fields(limits):
        for value in _past_the_limits(field):
            with pytest.raises(PlanInvalid) as refused:
                validate_plan(plan_data({**subtask("a"), field.name: value}), agents={"script"}, limits=limits)
            assert refused.value.code == "validation_error"
            assert f"subtasks[0].{field.name}" in refused.value.details
    for field in plan_fields(limits):
        for value in _past_the_limits(field):
            if field.kind == "subtasks":
                value = [subtask(f"s{i}") for i in range(limits.max_subtasks + 1)]
            with pytest.raises(PlanInvalid) as refused:
                validate_plan({**plan_data(subtask("a")), field.name: value}, agents={"script"}, limits=limits)
            assert refused.value.code in ("validation_error", "too_many_subtasks")


def _past_the_limits(field: Field) -> list:
    values: list = []
    if field.max_length is not None:
        prefix = "https://example.com/" if field.kind == "url" else ""
        values.append(prefix + "a" * (field.max_length + 1 - len(prefix)))
    if field.minimum is not None:
        values.append(field.minimum - 1)
    if field.maximum is not None:
        values.append(field.maximum + 1)
    if field.pattern:
        values.append("has space")
    if field.max_items is not None:
        values.append("too many")
    return values
