"""The Celery result backend when CELERY_RESULT_BACKEND is unset: the broker's Redis server, else PostgreSQL.

The engine keeps every run's outcome in its own tables; Celery's result backend only carries
the chords' bookkeeping (each header task's result, and the count that fires the body). Redis
does that natively, in one round trip per task; django-db writes a result row and takes a
row lock on the chord's counter for each. So with a Redis broker the default is the same
Redis server, in the database after the broker's (the broker's own when it is the last, 15);
with any other broker, django-db.
"""

from urllib.parse import urlsplit, urlunsplit

REDIS_SCHEMES = ("redis", "rediss")
REDIS_LAST_DATABASE = 15


def result_backend_default(broker_url: str) -> str:
    """Return the result backend for a broker URL (see the module's docstring)."""
    parts = urlsplit(broker_url)
    if parts.scheme not in REDIS_SCHEMES:
        return "django-db"
    database = parts.path.strip("/")
    number = int(database) if database.isdigit() else 0
    return urlunsplit(parts._replace(path=f"/{min(number + 1, REDIS_LAST_DATABASE)}"))


def is_database_backend(result_backend: str) -> bool:
    """Return whether task results go to PostgreSQL (django-celery-results), where the admin shows them."""
    return result_backend.startswith("django-db")
