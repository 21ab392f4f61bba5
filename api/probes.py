"""Health probes' answers, and an ASGI application that gives anonymous probes theirs before Django.

The answers are built here for both ways in: the DRF views (api/service.py: every server,
staff's details, the schema) and `Probes`, which wraps the ASGI application. Under ASGI,
Django runs each synchronous view in a thread and on a database connection of its own, within
the process's bound (config/admission.py); a flood of probes would queue the API's own requests
behind them. `Probes` answers anonymous GETs of /health/, /health/live/ and
/health/ready/ (at the root and under /api/v1/) on the event loop from the cached results, and
goes to a thread only when a result is stale (at most once a second, or once per ping period).
Requests that carry credentials go to Django, whose views show staff the details. Probes skip
ALLOWED_HOSTS, as orchestrators probe a container by its address, and the request metrics.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from common.version import VERSION
from execution.health import cached_health, cached_readiness, health_check, readiness

PUBLIC_KEYS = ("ok", "count", "age_s")
PATHS = {
    "/health/": "health",
    "/health/live/": "live",
    "/health/ready/": "ready",
    "/api/v1/health/": "health",
    "/api/v1/health/live/": "live",
    "/api/v1/health/ready/": "ready",
}
ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def live_answer() -> tuple[int, dict[str, Any]]:
    return 200, {"ok": True}


def ready_answer(report: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    return _answer(report or readiness(), details=False)


def health_answer(report: dict[str, Any] | None = None, *, details: bool = False) -> tuple[int, dict[str, Any]]:
    return _answer({"version": VERSION, **(report or health_check())}, details=details)


def _answer(report: dict[str, Any], *, details: bool) -> tuple[int, dict[str, Any]]:
    if not details:
        report = {key: _public(value) if isinstance(value, dict) else value for key, value in report.items()}
    return (200 if report["ok"] else 503), report


def _public(check: dict[str, Any]) -> dict[str, Any]:
    """Return what anyone may see of one check: whether it is up, and no host names or error texts."""
    return {key: value for key, value in check.items() if key in PUBLIC_KEYS}


class Probes:
    """Answer anonymous probes on the event loop; pass everything else to `app`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = PATHS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if kind is None or scope["method"] not in ("GET", "HEAD") or _has_credentials(scope):
            await self.app(scope, receive, send)
            return
        status, body = await _probe(kind)
        payload = json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"cache-control", b"no-store"),
            (b"x-content-type-options", b"nosniff"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload if scope["method"] == "GET" else b""})


async def _probe(kind: str) -> tuple[int, dict[str, Any]]:
    if kind == "live":
        return live_answer()
    if kind == "ready":
        ready = cached_readiness()
        return ready_answer(ready) if ready is not None else await asyncio.to_thread(ready_answer)
    health = cached_health()
    return health_answer(health) if health is not None else await asyncio.to_thread(health_answer)


def _has_credentials(scope: dict[str, Any]) -> bool:
    """Whether the request may be a signed-in user's: an Authorization header or the session cookie."""
    session = f"{settings.SESSION_COOKIE_NAME}=".encode()
    for name, value in scope.get("headers", []):
        if name == b"authorization" or (name == b"cookie" and session in value):
            return True
    return False
