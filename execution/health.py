"""Health of what the service needs: the database, the broker, and live workers."""

import time
from typing import Any

from celery import current_app
from django.db import connection

PING_TIMEOUT_S = 1


def health_check() -> dict[str, Any]:
    """Return the status of the database, the broker and the workers; `ok` only if all are up."""
    database = _timed(_database)
    broker = _timed(_broker)
    workers: dict[str, Any] = {"ok": False, "count": 0, "names": []}
    if broker["ok"]:
        try:
            replies = current_app.control.ping(timeout=PING_TIMEOUT_S) or []
        except Exception as error:  # e.g. a pooled connection from before a broker restart: down, not a 500
            workers["error"] = f"{type(error).__name__}: {error}"
        else:
            names = sorted(name for reply in replies for name in reply)
            workers = {"ok": bool(names), "count": len(names), "names": names}
    return {
        "ok": database["ok"] and broker["ok"] and workers["ok"],
        "database": database,
        "broker": broker,
        "workers": workers,
    }


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


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
