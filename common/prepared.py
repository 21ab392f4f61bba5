"""Cursors whose statements PostgreSQL parses and plans once per connection, for statements run on every request.

Django's cursors bind parameters on the client (its default for psycopg 3): PostgreSQL then
parses and plans each statement anew, which for the few statements of a decision takes
about as long as running them. A prepared cursor binds them on the server, and psycopg
prepares a statement from its PREPARE_THRESHOLD-th use on a connection; Django's own
cursors are unchanged. Each parameter needs a type PostgreSQL can tell: a column it is
compared with or assigned to, or a cast (%s::uuid) where it stands alone (in a function's
arguments, in a VALUES list). For statements of a fixed text: one whose text varies with the
number of its rows gains nothing, and the server takes 65,535 parameters at most.
"""

import psycopg
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.postgresql.base import CursorDebugWrapper
from django.db.backends.postgresql.psycopg_any import register_tzloader
from django.db.backends.utils import CursorWrapper
from psycopg.pq import Format

PREPARE_THRESHOLD = 5

# The class of the cursors made here: psycopg's, or one that also traces each statement (set
# by config/telemetry.py when traces are on, as OpenTelemetry traces Django's own cursors).
_cursor_class: type[psycopg.Cursor] = psycopg.Cursor  # type: ignore[type-arg]


def prepared_cursor_class_set(cursor_class: type[psycopg.Cursor]) -> None:  # type: ignore[type-arg]
    """Make the prepared cursors instances of `cursor_class` (a subclass of psycopg.Cursor)."""
    global _cursor_class
    _cursor_class = cursor_class


def prepared_cursor(connection: BaseDatabaseWrapper, *, prepare: bool = True) -> CursorWrapper:
    """Return a cursor on `connection` (PostgreSQL) that prepares the statements it runs often; use it as Django's.

    `prepare` False gives Django's own cursor, for a statement whose text varies (see above).

    Its statements are logged as Django's are (connection.queries, CaptureQueriesContext),
    with their values written in; /metrics does not count them. Prepared statements belong
    to the connection's session: behind PgBouncer in transaction mode they need PgBouncer
    1.21 or later with `max_prepared_statements` set.
    """
    if not prepare:
        return connection.cursor()
    connection.close_if_health_check_failed()  # as Django's cursor() does, when the check is due
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        raw.prepare_threshold = PREPARE_THRESHOLD
    connection.validate_thread_sharing()
    with connection.wrap_database_errors:
        cursor = _cursor_class(raw)
    # Datetimes in the connection's time zone, as Django's create_cursor() gives its cursors.
    loader = raw.adapters.get_loader(psycopg.adapters.types["timestamptz"].oid, Format.TEXT)
    if connection.timezone != loader.timezone:
        register_tzloader(connection.timezone, cursor)
    return _LoggedCursor(cursor, connection) if connection.queries_logged else connection.make_cursor(cursor)  # type: ignore[arg-type]


# psycopg keeps its parse of a statement's text (placeholders to $n) only for texts of at most this many bytes.
PARSE_CACHED_BYTES = 4096


def compact(sql: str) -> str:
    """Return a statement's text without its comment lines and indentation, so psycopg keeps its parse of it.

    psycopg converts a text's placeholders once and keeps the result only for texts of at most
    PARSE_CACHED_BYTES; a longer one is parsed again on every execution. Raises ValueError
    when even the compact text is longer.
    """
    lines = [line.strip() for line in sql.strip().splitlines()]
    text = "\n".join(line for line in lines if line and not line.startswith("--"))
    if len(text.encode()) > PARSE_CACHED_BYTES:
        raise ValueError(f"A statement of {len(text.encode())} bytes is parsed on every execution")
    return text


class _LoggedCursor(CursorDebugWrapper):
    """Logs a statement with its values written in, as Django logs its own when the server binds them."""

    def debug_sql(self, sql=None, params=None, use_last_executed_query=False, many=False):  # type: ignore[no-untyped-def]
        if use_last_executed_query and not many:
            sql, use_last_executed_query = self.db.ops.compose_sql(sql, params), False
        return super().debug_sql(sql, params, use_last_executed_query, many)
