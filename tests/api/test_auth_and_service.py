"""Tokens, sessions, throttling, the agents list, and the OpenAPI schema and docs (health: test_health.py)."""

import json
import uuid

import pytest
import yaml
from django.core.cache import cache
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from execution.agents.registry import limits_of
from execution.limits import hold_back, model_call_admit, slot_release, slot_take
from tests.api.conftest import client_for
from tests.api.test_plans import assert_error
from tests.support.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_a_token_from_username_and_password_authenticates():
    UserFactory(username="alice", password="s3cret-pass")
    client = APIClient()
    response = client.post("/api/v1/auth/token/", {"username": "alice", "password": "s3cret-pass"}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/plans/").status_code == 200
    client.credentials(HTTP_AUTHORIZATION="Token wrong")
    assert_error(client.get("/api/v1/plans/"), 401, "not_authenticated")


def test_a_token_of_an_inactive_user_or_deleted_authenticates_no_more():
    user = UserFactory()
    token = Token.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get("/api/v1/agents/").status_code == 200
    user.is_active = False
    user.save()
    assert "inactive" in assert_error(client.get("/api/v1/agents/"), 401, "not_authenticated")["message"]
    token.delete()
    assert "Invalid token" in assert_error(client.get("/api/v1/agents/"), 401, "not_authenticated")["message"]


def test_wrong_credentials_get_no_token():
    UserFactory(username="alice", password="s3cret-pass")
    error = assert_error(
        APIClient().post("/api/v1/auth/token/", {"username": "alice", "password": "nope"}, format="json"),
        400,
        "validation_error",
    )
    assert "credentials" in error["message"]
    assert_error(APIClient().post("/api/v1/auth/token/", {}, format="json"), 400, "validation_error")


def test_session_login_works_too():
    UserFactory(username="alice", password="s3cret-pass")
    client = APIClient()
    assert client.login(username="alice", password="s3cret-pass")
    assert client.get("/api/v1/plans/").status_code == 200


def test_requests_past_the_rate_are_throttled(monkeypatch):
    # DRF reads the rates into the throttle class when it is imported.
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {"anon": "2/minute", "user": "3/minute", "token": "2/minute"}
    )
    cache.clear()
    client = client_for(UserFactory())
    codes = [client.get("/api/v1/agents/").status_code for _ in range(4)]
    assert codes[:3] == [200, 200, 200]
    error = assert_error(client.get("/api/v1/agents/"), 429, "throttled")
    assert error["details"]["wait"] > 0
    cache.clear()


def test_agents_are_listed():
    agents = client_for(UserFactory()).get("/api/v1/agents/").json()
    names = [agent["name"] for agent in agents]
    assert {"script", "http", "python", "coder", "debug", "ask"} <= set(names)
    assert set(agents[0]) == {"name", "implementation", "description", "mcp_servers", "output_schema", "limits"}
    assert next(agent for agent in agents if agent["name"] == "script")["limits"] == {
        "max_concurrency": None,
        "running": None,
        "requests_per_minute": None,
        "requests_last_minute": None,
        "held_for_s": None,
    }


def test_agents_show_their_limits_and_what_is_used_of_them(tmp_path, settings):
    # Redis keeps its keys between tests: this test's own agent names.
    pair, paced = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("pair", "paced"))
    model = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "requests_per_minute": 60}
    path = tmp_path / "agents.json"
    path.write_text(json.dumps({pair: {"kind": "script", "max_concurrency": 2}, paced: model}))
    settings.EXECUTION_AGENTS_FILE = str(path)
    slot = slot_take(pair, 2)
    model_call_admit(agent=paced, limits=limits_of(paced), deadline_s=0)
    hold_back(agent=paced, seconds=30)

    agents = {agent["name"]: agent for agent in client_for(UserFactory()).get("/api/v1/agents/").json()}

    assert slot is not None
    slot_release(pair, slot)
    assert agents[pair]["limits"] == {
        "max_concurrency": 2,
        "running": 1,
        "requests_per_minute": None,
        "requests_last_minute": None,
        "held_for_s": None,
    }
    limits = agents[paced]["limits"]
    assert (limits["max_concurrency"], limits["running"], limits["requests_per_minute"]) == (None, None, 60)
    assert limits["requests_last_minute"] == 1
    assert 0 < limits["held_for_s"] <= 30


def test_the_schema_validates_and_documents_errors(tmp_path):
    path = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    schema = yaml.safe_load(path.read_text())
    assert "/api/v1/plans/{id}/subtasks/{key}/retry/" in schema["paths"]
    create = schema["paths"]["/api/v1/plans/"]["post"]["responses"]
    assert {"201", "400", "401"} <= set(create)
    assert "Error" in schema["components"]["schemas"]
    served = APIClient().get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert served.status_code == 200


def test_docs_are_served_without_a_cdn():
    page = APIClient().get("/api/v1/docs/").content.decode()
    assert "swagger-ui" in page
    assert "cdn" not in page.lower()
