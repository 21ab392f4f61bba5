"""Under ASGI, anonymous probes are answered before Django, as the API's views answer them; the rest goes to Django."""

import asyncio

import httpx
import pytest
from celery import current_app
from rest_framework.test import APIClient

from api.probes import Probes
from execution import health

pytestmark = pytest.mark.django_db(transaction=True)


class Django:
    """Stands for Django's ASGI application: answers 299 and counts the requests it gets."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.setattr(current_app.control, "ping", lambda timeout, limit=None: [{"subtasks@host": {"ok": "pong"}}])
    health.health_cache_clear()
    yield
    health.health_cache_clear()


def without_age(body: dict) -> dict:
    """The body but the age of the workers' answer, which grows between two calls."""
    return {**body, "workers": {**body["workers"], "age_s": None}} if "workers" in body else body


def get(app, path: str, method: str = "GET", **headers: str) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://10.1.2.3:8000") as client:
            return await client.request(method, path, headers=headers)

    return asyncio.run(call())


def test_anonymous_probes_get_the_views_answers_without_reaching_django():
    django = Django()
    app = Probes(django)
    for path in ("/health/live/", "/health/ready/", "/health/", "/api/v1/health/ready/"):
        fast = get(app, path)
        view = APIClient().get(path)
        assert (fast.status_code, without_age(fast.json())) == (view.status_code, without_age(view.json())), path
        # An orchestrator probes the container by its address, which ALLOWED_HOSTS need not list.
        assert fast.headers["cache-control"] == "no-store"
    assert get(app, "/health/", method="HEAD").content == b""
    assert django.paths == []


def test_requests_with_credentials_or_for_other_paths_go_to_django():
    django = Django()
    app = Probes(django)
    assert get(app, "/health/", authorization="Token abc").status_code == 299
    assert get(app, "/health/", cookie="sessionid=xyz").status_code == 299
    assert get(app, "/health/", method="POST").status_code == 299
    assert get(app, "/api/v1/plans/").status_code == 299
    assert get(app, "/health/", cookie="theme=dark").status_code == 200
    assert django.paths == ["/health/", "/health/", "/health/", "/api/v1/plans/"]
