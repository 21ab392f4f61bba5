"""Health: live touches nothing, ready asks no worker, /health/ pings workers rarely and shows staff the details."""

import pytest
from celery import current_app
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from common.version import VERSION
from execution import health
from tests.api.conftest import client_for

pytestmark = pytest.mark.django_db


class Pings:
    """A stand-in for the workers' broadcast ping that counts the calls and their arguments."""

    def __init__(self, replies=None, error: Exception | None = None) -> None:
        self.replies, self.error = replies or [], error
        self.calls: list[dict] = []

    def __call__(self, timeout, limit=None):
        self.calls.append({"timeout": timeout, "limit": limit})
        if self.error is not None:
            raise self.error
        return self.replies


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.HEALTH_WORKERS_CACHE_S = 5
    health.health_cache_clear()
    yield
    health.health_cache_clear()


@pytest.fixture
def pings(monkeypatch):
    stand_in = Pings([{"subtasks@host": {"ok": "pong"}}])
    monkeypatch.setattr(current_app.control, "ping", stand_in)
    return stand_in


def test_live_touches_neither_database_nor_broker_nor_workers(monkeypatch, django_assert_num_queries):
    def down(*args, **kwargs):
        raise AssertionError("live must not check this")

    monkeypatch.setattr(health, "_database", down)
    monkeypatch.setattr(health, "_broker", down)
    monkeypatch.setattr(current_app.control, "ping", down)
    for path in ("/health/live/", "/api/v1/health/live/"):
        with django_assert_num_queries(0):
            response = APIClient().get(path)
        assert (response.status_code, response.json()) == (200, {"ok": True})


def test_ready_answers_for_database_and_broker_without_a_worker_round_trip(monkeypatch):
    monkeypatch.setattr(current_app.control, "ping", Pings(error=AssertionError("no worker round trip")))
    response = APIClient().get("/health/ready/")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "database": {"ok": True}, "broker": {"ok": True}}

    def broken():
        raise ConnectionError("connection refused by 10.0.0.7")

    monkeypatch.setattr(health, "_database", broken)
    health.health_cache_clear()
    response = APIClient().get("/api/v1/health/ready/")
    assert response.status_code == 503
    assert response.json() == {"ok": False, "database": {"ok": False}, "broker": {"ok": True}}


def test_ready_checks_at_most_once_per_period(monkeypatch, settings):
    settings.HEALTH_READY_CACHE_S = 60
    checks = []
    monkeypatch.setattr(health, "_database", lambda: checks.append("database"))
    for _ in range(20):
        assert APIClient().get("/health/ready/").status_code == 200
    assert checks == ["database"]


def test_workers_are_pinged_with_a_limit_and_a_short_timeout_then_the_answer_is_shared(pings, settings):
    settings.HEALTH_WORKERS = 3
    for _ in range(10):
        APIClient().get("/health/")
    assert pings.calls == [{"timeout": settings.HEALTH_PING_TIMEOUT_S, "limit": 3}]
    assert settings.HEALTH_PING_TIMEOUT_S < 1


def test_anonymous_callers_see_no_hostnames_latencies_or_error_texts(pings):
    body = APIClient().get("/health/").json()
    assert body == {
        "ok": True,
        "version": VERSION,
        "database": {"ok": True},
        "broker": {"ok": True},
        "workers": {"ok": True, "count": 1, "age_s": body["workers"]["age_s"]},
    }


def test_staff_see_hostnames_latencies_and_error_texts(pings, staff, monkeypatch):
    body = client_for(staff).get("/health/").json()
    assert body["workers"]["names"] == ["subtasks@host"]
    assert body["database"]["latency_ms"] >= 0

    def broken():
        raise ConnectionError("database is down")

    monkeypatch.setattr(health, "_database", broken)
    health.health_cache_clear()
    response = client_for(staff).get("/api/v1/health/")
    assert response.status_code == 503
    assert response.json()["database"] == {"ok": False, "error": "ConnectionError: database is down"}


def test_no_worker_answering_is_503_and_a_failing_ping_is_503_not_500(monkeypatch, staff):
    monkeypatch.setattr(current_app.control, "ping", Pings([]))
    response = APIClient().get("/health/")
    assert response.status_code == 503
    assert response.json()["workers"]["ok"] is False
    # Liveness and readiness do not depend on the workers: a worker outage restarts no web container.
    assert APIClient().get("/health/live/").status_code == 200
    assert APIClient().get("/health/ready/").status_code == 200

    monkeypatch.setattr(current_app.control, "ping", Pings(error=ConnectionError("Connection closed by server.")))
    health.health_cache_clear()
    response = client_for(staff).get("/health/")
    assert response.status_code == 503
    assert response.json()["workers"]["error"] == "ConnectionError: Connection closed by server."


def test_probes_are_never_throttled(pings, monkeypatch):
    # A probe answered 429 reads as down. DRF reads the rates into the throttle class when it is imported.
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "1/minute", "user": "1/minute"})
    cache.clear()
    client = APIClient()
    for path in ("/health/", "/health/live/", "/health/ready/"):
        assert [client.get(path).status_code for _ in range(3)] == [200, 200, 200], path
