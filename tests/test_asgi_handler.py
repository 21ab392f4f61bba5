"""The web's ASGI handler (config/handler.py): Django's synchronous chain, entered once a request."""

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import AsyncToSync
from django.core.handlers.asgi import ASGIHandler
from rest_framework.authtoken.models import Token

from config.handler import SynchronousChainHandler
from tests.support.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)  # the requests run in threads of their own


def _request(app: Any, method: str, path: str, *, token: str = "", body: bytes = b"") -> tuple[int, dict, bytes]:
    """Send one HTTP request through an ASGI app on an event loop of its own; return its status, headers and body."""
    headers = [(b"host", b"localhost"), (b"content-type", b"application/json")]
    if token:
        headers.append((b"authorization", f"Token {token}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    headers_out = {name.decode().lower(): value.decode() for name, value in start["headers"]}
    return start["status"], headers_out, b"".join(message.get("body", b"") for message in sent[1:])


@pytest.fixture
def token() -> str:
    return Token.objects.create(user=UserFactory(username="caller")).key


@pytest.fixture
def crossings(monkeypatch) -> list[object]:
    """Record each call from a request's thread back onto the event loop (asgiref's AsyncToSync)."""
    calls: list[object] = []
    original = AsyncToSync.__call__

    def counted(self, *args, **kwargs):
        calls.append(self.awaitable)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AsyncToSync, "__call__", counted)
    return calls


def test_an_api_request_runs_in_its_thread_without_going_back_to_the_event_loop(token, crossings):
    status, headers, body = _request(SynchronousChainHandler(), "GET", "/api/v1/agents/", token=token)
    assert status == 200, body
    assert headers["x-content-type-options"] == "nosniff"  # Django's middleware ran
    assert crossings == []


def test_djangos_own_handler_goes_back_to_the_event_loop_for_the_view(token, crossings):
    """What the handler saves: Django's chain leaves the request's thread between the middleware and the view."""
    status, _, body = _request(ASGIHandler(), "GET", "/api/v1/agents/", token=token)
    assert status == 200, body
    assert crossings


def test_refusals_are_answered_as_the_api_answers_them(token, crossings):
    app = SynchronousChainHandler()
    status, _, body = _request(app, "GET", "/api/v1/agents/")
    assert (status, json.loads(body)["error"]["code"]) == (401, "not_authenticated")
    status, _, body = _request(app, "POST", "/api/v1/approvals/decide/", token=token, body=b"{not json")
    assert (status, json.loads(body)["error"]["code"]) == (400, "validation_error")
    assert crossings == []
