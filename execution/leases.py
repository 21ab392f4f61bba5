"""Who is running a subtask attempt: a PostgreSQL advisory lock held by the worker running it.

The worker takes the lock for (subtask, attempt) before it marks the subtask running and
gives it back after it records the outcome. PostgreSQL drops the lock when the worker's
connection dies with its process, so anyone can tell a dead run (lock free) from a live
or frozen one (lock held) without waiting for a timeout.
"""

from collections.abc import Iterable
from uuid import UUID

from django.db import connection


def lease_acquire(subtask_id: UUID, attempt: int) -> bool:
    """Take the lock of a run; False when another session already holds it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s), %s)", [str(subtask_id), attempt])
        return bool(cursor.fetchone()[0])


def lease_release(subtask_id: UUID, attempt: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(hashtext(%s), %s)", [str(subtask_id), attempt])


def leases_abandoned(runs: Iterable[tuple[UUID, int]]) -> set[UUID]:
    """Return the subtasks among (subtask, attempt) runs whose lock nobody holds."""
    runs = list(runs)
    if not runs:
        return set()
    ids, attempts = [str(run[0]) for run in runs], [run[1] for run in runs]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, attempt FROM unnest(%s::uuid[], %s::int[]) AS run(id, attempt)"
            " WHERE pg_try_advisory_lock(hashtext(id::text), attempt)",
            [ids, attempts],
        )
        free = cursor.fetchall()
        if free:
            cursor.execute(
                "SELECT pg_advisory_unlock(hashtext(id::text), attempt)"
                " FROM unnest(%s::uuid[], %s::int[]) AS run(id, attempt)",
                [[str(row[0]) for row in free], [row[1] for row in free]],
            )
    return {row[0] for row in free}
