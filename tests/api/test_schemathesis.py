"""Property-based API testing from the OpenAPI schema: no server errors, responses as documented."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from rest_framework.authtoken.models import Token
from rest_framework.throttling import SimpleRateThrottle
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from execution.services import plan_submit
from tests.support.factories import UserFactory, plan_data, subtask

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# The live stream never ends and health waits for worker pings: both have their own tests.
SKIPPED = ("/events/", "/health/")
OPERATIONS = [
    (path, method.upper())
    for path, item in SchemaGenerator().get_schema(request=None, public=True)["paths"].items()
    for method in item
    if not path.endswith(SKIPPED)
]


@pytest.fixture
def api_schema(db, monkeypatch):
    monkeypatch.setattr(
        SimpleRateThrottle,
        "THROTTLE_RATES",
        {"anon": "100000/minute", "user": "100000/minute", "token": "100000/minute"},
    )
    # As Django's test client does: the app must not close the test's connection after each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/v1/schema/", application)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def token(db):
    user = UserFactory(username="fuzzer")
    # Something to find: a plan and its approval.
    plan_submit(owner=user, data=plan_data(subtask("a"), subtask("b", "a")))
    return Token.objects.create(user=user).key


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_api_conforms_to_its_schema(api_schema, token, path, method):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def conforms(case):
        case.call_and_validate(headers={"Authorization": f"Token {token}", "Accept": "application/json"}, checks=CHECKS)

    conforms()
