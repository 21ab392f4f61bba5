"""Turn DATABASE_URL into Django's DATABASES entry, accepting every form libpq accepts."""

import getpass
from typing import Any

from psycopg.conninfo import conninfo_to_dict

_DJANGO_KEYS = {"dbname": "NAME", "user": "USER", "password": "PASSWORD", "host": "HOST", "port": "PORT"}  # nosec


def database_from_url(
    url: str, *, conn_max_age: int = 0, engine: str = "django.db.backends.postgresql"
) -> dict[str, Any]:
    """Return a PostgreSQL DATABASES entry for a libpq URI or key=value connection string.

    libpq itself parses the string, so unix sockets (`?host=/path`, percent-encoded
    hosts), several hosts, and options such as `sslmode` all work; options Django has no
    field for are handed to psycopg unchanged.
    """
    params: dict[str, Any] = dict(conninfo_to_dict(url))
    entry: dict[str, Any] = {
        "ENGINE": engine,
        "CONN_MAX_AGE": conn_max_age,
        "CONN_HEALTH_CHECKS": True,
    }
    for libpq_key, django_key in _DJANGO_KEYS.items():
        entry[django_key] = str(params.pop(libpq_key, ""))
    # libpq falls back to the user name, then the login name, for a missing database.
    entry["NAME"] = entry["NAME"] or entry["USER"] or getpass.getuser()
    entry["OPTIONS"] = params
    return entry


def connections_pooled(max_size: int, *, max_idle_s: float) -> None:
    """Take this process's PostgreSQL connections from a pool of at most `max_size` (Django's "pool" option).

    For the web: ASGI serves each request on a thread of its own, where a kept connection
    (CONN_MAX_AGE) would be one per thread, so without a pool every request connected anew,
    a few milliseconds and a server process each. A request takes a connection at its first
    query (checked first with an empty query, as CONN_HEALTH_CHECKS asks Django's pool to do:
    one gone with a database restart is replaced) and gives it back as it ends; connections
    unused for `max_idle_s` are closed, down to one. Call it before the first query. `max_size`
    0 leaves the settings as they are.
    """
    if max_size <= 0:
        return
    from django.db import connections

    for alias in connections:
        entry = connections.settings[alias]
        entry["CONN_MAX_AGE"] = 0  # the pool keeps the connections instead
        entry["OPTIONS"]["pool"] = {"min_size": 1, "max_size": max_size, "max_idle": max_idle_s, "timeout": 30}
