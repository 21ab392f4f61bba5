"""Health of what the service needs, cheap enough for any number of probes.

- Readiness (the database and the broker) is checked at most once per HEALTH_READY_CACHE_S in
  each process; callers in between, or waiting while one checks, share that result. A flood of
  probes costs the database one `SELECT 1` per process per period, not one connection per probe.
  The database check opens a connection of its own (and closes it): it proves that new
  connections can be made, from whatever thread asks.
- The workers answer one broadcast ping, sent with a `limit` (it returns as soon as
  HEALTH_WORKERS replies arrived) and a HEALTH_PING_TIMEOUT_S under a second, at most once per
  HEALTH_WORKERS_CACHE_S for every web process sharing the cache (CACHE_URL); while one process
  pings, the others answer with the last reply.

`cached_health` answers without any I/O while both results are fresh, so that the ASGI
application can answer anonymous probes on its event loop (api/probes.py).
"""

import threading
import time
from typing import Any

import psycopg
from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import connection

WORKERS_KEY = "health:workers"
WORKERS_LOCK_KEY = "health:workers:pinging"

_ready_lock = threading.Lock()
_ready: tuple[float, dict[str, Any]] | None = None
# The last answer of the workers this process saw (read from the shared cache, or pinged).
_workers: dict[str, Any] | None = None


def readiness() -> dict[str, Any]:
    """Return the status of the database and the broker; `ok` only if both answer."""
    global _ready
    cached = cached_readiness()
    if cached is not None:
        return cached
    with _ready_lock:  # callers arriving meanwhile wait for this check instead of making their own
        cached = cached_readiness()
        if cached is not None:
            return cached
        database, broker = _timed(_database), _timed(_broker)
        report = {"ok": database["ok"] and broker["ok"], "database": database, "broker": broker}
        _ready = (time.monotonic(), report)
        return report


def health_check() -> dict[str, Any]:
    """Return readiness and the workers' answer to the last ping; `ok` only if all are up."""
    ready = readiness()
    workers = workers_status() if ready["broker"]["ok"] else {"ok": False, "count": 0, "names": []}
    return {**ready, "ok": ready["ok"] and workers["ok"], "workers": workers}


def cached_readiness() -> dict[str, Any] | None:
    """Return readiness while its last check is fresh, else None (no I/O)."""
    cached = _ready
    if cached is not None and time.monotonic() - cached[0] < settings.HEALTH_READY_CACHE_S:
        return cached[1]
    return None


def cached_health() -> dict[str, Any] | None:
    """Return health_check()'s answer while every part of it is fresh, else None (no I/O)."""
    ready, workers = cached_readiness(), _workers
    if ready is None or workers is None or time.time() - workers["at"] >= settings.HEALTH_WORKERS_CACHE_S:
        return None
    status = _aged(workers) if ready["broker"]["ok"] else {"ok": False, "count": 0, "names": []}
    return {**ready, "ok": ready["ok"] and status["ok"], "workers": status}


def health_cache_clear() -> None:
    """Forget every cached result (tests, and a process that knows the world changed)."""
    global _ready, _workers
    _ready = _workers = None
    cache.delete_many([WORKERS_KEY, WORKERS_LOCK_KEY])


def workers_status() -> dict[str, Any]:
    """Return the last ping's answer, pinging first when it is older than HEALTH_WORKERS_CACHE_S."""
    return _aged(_remembered(_workers_answer()))


def _remembered(status: dict[str, Any]) -> dict[str, Any]:
    global _workers
    if _workers is None or status["at"] >= _workers["at"]:
        _workers = status
    return status


def _workers_answer() -> dict[str, Any]:
    try:
        cached = cache.get(WORKERS_KEY)
        if cached is not None and time.time() - cached["at"] < settings.HEALTH_WORKERS_CACHE_S:
            return cached
        timeout = settings.HEALTH_PING_TIMEOUT_S
        if not cache.add(WORKERS_LOCK_KEY, 1, timeout=timeout + 5):
            # Another process (or thread) pings now: its answer, or the last one, will do.
            return cached if cached is not None else _wait_for_ping(timeout + 1)
    except Exception:  # the shared cache is down: ping without it, as before there was one
        return _ping()
    try:
        status = _ping()
        cache.set(WORKERS_KEY, status, timeout=max(60.0, 10 * settings.HEALTH_WORKERS_CACHE_S))
    finally:
        cache.delete(WORKERS_LOCK_KEY)
    return status


def _ping() -> dict[str, Any]:
    status: dict[str, Any] = {"ok": False, "count": 0, "names": [], "at": time.time()}
    for _ in range(2):
        try:
            replies = (
                current_app.control.ping(timeout=settings.HEALTH_PING_TIMEOUT_S, limit=settings.HEALTH_WORKERS) or []
            )
        except Exception as error:  # e.g. a pooled connection from before a broker restart: down, not a 500
            status["error"] = f"{type(error).__name__}: {error}"
            # Once more on a fresh connection; a failure is kept a second only, not a whole period.
            status["at"] = time.time() - max(0.0, settings.HEALTH_WORKERS_CACHE_S - 1)
            continue
        names = sorted(name for reply in replies for name in reply)
        return {"ok": len(names) >= settings.HEALTH_WORKERS, "count": len(names), "names": names, "at": time.time()}
    return status


def _wait_for_ping(timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.02)
        found = cache.get(WORKERS_KEY)
        if found is not None:
            return found
    return {"ok": False, "count": 0, "names": [], "error": "no answer to the ping yet", "at": time.time()}


def _aged(status: dict[str, Any]) -> dict[str, Any]:
    """Return a ping's answer with its age in seconds instead of its time."""
    answer = {key: value for key, value in status.items() if key != "at"}
    answer["age_s"] = round(max(0.0, time.time() - status["at"]), 1)
    return answer


def _database() -> None:
    """Open a connection of our own, as Django would, and ask it something."""
    params = {**connection.get_connection_params(), "connect_timeout": 2}
    params.pop("cursor_factory", None)
    with psycopg.connect(**params) as conn:
        conn.execute("SELECT 1")


def _broker() -> None:
    with current_app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=1)


def _timed(check) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        check()
    except Exception as error:  # any failure means "down"; say which
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}
    return {"ok": True, "latency_ms": round((time.perf_counter() - start) * 1000, 1)}
