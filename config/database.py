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
