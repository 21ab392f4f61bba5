"""The web's ASGI handler (config/handler.py): Django's synchronous chain, in one call on a pooled thread."""

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import AsyncToSync
from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.db import connection
from django.http import HttpRequest, StreamingHttpResponse
from django.test import override_settings
from django.urls import path
from rest_framework.authtoken.models import Token

from config.handler import SynchronousChainHandler
from plans.models import Plan
from tests.support.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)  # the requests run in threads of their own

Receive = Callable[[], Awaitable[dict[str, Any]]]


def _request(
    app: Any,
    method: str,
    path: str,
    *,
    token: str = "",
    body: bytes = b"",
    sent: list[dict[str, Any]] | None = None,
    after_body: Receive | None = None,
    query: bytes = b"",
) -> tuple[int, dict, bytes]:
    """Send one HTTP request through an ASGI app on an event loop of its own; return its status, headers and body.

    `sent` collects what the app sends as it sends it; `after_body` is what `receive` answers
    once the body is read (by default the client stays connected).
    """
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
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent = [] if sent is None else sent

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        if after_body is not None:
            return await after_body()
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


@pytest.fixture
def seen() -> list[tuple]:
    """Record request_started and request_finished: the thread each fired on, and whether it held a connection."""
    fired: list[tuple] = []

    def started(**_: Any) -> None:
        fired.append(("started", threading.current_thread().name))

    def finished(**_: Any) -> None:
        # After Django's own receiver (connected first), which gives the request's connection back.
        fired.append(("finished", threading.current_thread().name, connection.connection is None))

    signals.request_started.connect(started, weak=False)
    signals.request_finished.connect(finished, weak=False)
    yield fired
    signals.request_started.disconnect(started)
    signals.request_finished.disconnect(finished)


def test_a_request_is_served_in_one_call_on_a_thread_of_the_handler_without_going_back_to_the_event_loop(
    token, crossings, seen
):
    app = SynchronousChainHandler(threads=1)
    for _ in range(2):
        sent: list[dict[str, Any]] = []
        status, headers, body = _request(app, "GET", "/api/v1/agents/", token=token, sent=sent)
        assert status == 200, body
        assert headers["x-content-type-options"] == "nosniff"  # Django's middleware ran

    # Started and finished on the same thread, the handler's (kept for the next request), the
    # connection given back as the request finished.
    assert seen == [("started", "request_0"), ("finished", "request_0", True)] * 2
    assert crossings == []


def test_djangos_own_handler_goes_back_to_the_event_loop_for_the_view(token, crossings):
    """What the handler saves: Django's chain leaves the request's thread between the middleware and the view."""
    status, _, body = _request(ASGIHandler(), "GET", "/api/v1/agents/", token=token)
    assert status == 200, body
    assert crossings


def test_refusals_are_answered_as_the_api_answers_them(token, crossings):
    app = SynchronousChainHandler(threads=2)
    status, _, body = _request(app, "GET", "/api/v1/agents/")
    assert (status, json.loads(body)["error"]["code"]) == (401, "not_authenticated")
    status, _, body = _request(app, "POST", "/api/v1/approvals/decide/", token=token, body=b"{not json")
    assert (status, json.loads(body)["error"]["code"]) == (400, "validation_error")
    assert crossings == []


def test_a_request_django_cannot_read_is_refused_and_finished_in_one_call(token, seen):
    status, _, _ = _request(SynchronousChainHandler(threads=1), "GET", "/api/v1/agents/", token=token, query=b"q=\xff")

    assert status == 400  # Django's refusal of a query string that is not UTF-8
    assert seen == [("started", "request_0"), ("finished", "request_0", True)]


# --- Streaming responses ----------------------------------------------------------------------------

served_by: list[SynchronousChainHandler] = []  # the app under test, for the views below
closed: list[str] = []


async def _two_chunks() -> AsyncIterator[bytes]:
    yield b"one"
    # The request's thread is free while the response streams, its connection given back.
    [app] = served_by
    given_back = await asyncio.wrap_future(app.executor.submit(lambda: connection.connection is None))
    yield b" two" if given_back else b" still holding a connection"


async def _until_disconnected() -> AsyncIterator[bytes]:
    try:
        yield b"one"
        await asyncio.Event().wait()
        yield b"never"
    finally:
        closed.append("stream")


def _streaming(request: HttpRequest) -> StreamingHttpResponse:
    Plan.objects.exists()  # the view uses a connection
    body = _until_disconnected() if "disconnect" in request.path else _two_chunks()
    return StreamingHttpResponse(body, content_type="text/plain")


urlpatterns = [path("stream/", _streaming), path("stream/disconnect/", _streaming)]


@pytest.fixture
def streaming_app():
    app = SynchronousChainHandler(threads=1)
    served_by[:] = [app]
    closed.clear()
    with override_settings(ROOT_URLCONF=__name__):
        yield app
    served_by.clear()


def test_a_streaming_response_gives_its_connection_back_as_its_view_returns_and_is_closed_after_its_end(
    streaming_app, seen, crossings
):
    sent: list[dict[str, Any]] = []
    status, _, body = _request(streaming_app, "GET", "/stream/", sent=sent)

    assert (status, body) == (200, b"one two")
    assert seen == [("started", "request_0"), ("finished", "request_0", True)]
    assert sent[-1] == {"type": "http.response.body"}  # finished once everything was sent
    assert crossings == []


def test_a_stream_the_client_leaves_is_ended_and_closed(streaming_app, seen):
    sent: list[dict[str, Any]] = []

    async def gone_after_the_first_chunk() -> dict[str, Any]:
        while len(sent) < 2:  # the response's start, then its first chunk
            await asyncio.sleep(0.01)
        return {"type": "http.disconnect"}

    status, _, body = _request(
        streaming_app, "GET", "/stream/disconnect/", sent=sent, after_body=gone_after_the_first_chunk
    )

    assert (status, body) == (200, b"one")
    assert closed == ["stream"]
    assert seen == [("started", "request_0"), ("finished", "request_0", True)]
