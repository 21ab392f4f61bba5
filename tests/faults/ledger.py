"""The ledger agent: a python agent whose side effect is a row in the database, one per run it starts.

Delivery is at least once, so a run may happen twice; what must hold is that the engine
never starts the same attempt twice (a duplicate message is dropped before the agent),
and records one completion, the one of its last attempt. The ledger is where the side
effects are counted, in the database, not inferred from the engine's own records.
"""

import os
import time
from collections import Counter
from typing import Any

from django.db import connection

from plans.models import Plan, SubtaskStatus
from tests.support.factories import subtask

TABLE = "fault_ledger"
CALLABLE = "tests.faults.ledger.record"


def ledger_create() -> None:
    """Create the ledger (not a Django model: the flush between tests leaves it alone)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} ("
            " id bigserial PRIMARY KEY, subtask_id uuid NOT NULL, attempt int NOT NULL,"
            " worker_pid int NOT NULL, at timestamptz NOT NULL DEFAULT now())"
        )


def record(context: dict[str, Any]) -> dict[str, Any]:
    """Write this run's row first (the side effect), then work for `sleep_ms`; return which run it was."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (subtask_id, attempt, worker_pid) VALUES (%s, %s, %s) RETURNING id",
            [context["subtask_id"], context["attempt"], os.getpid()],
        )
        entry = cursor.fetchone()[0]
    time.sleep(context["input"].get("sleep_ms", 0) / 1000)
    return {"entry": entry, "attempt": context["attempt"]}


def ledger_subtask(key: str, *depends_on: str, sleep_ms: int = 0, **fields: Any) -> dict[str, Any]:
    """Return a subtask run by the ledger agent."""
    return subtask(key, *depends_on, agent="python", input={"callable": CALLABLE, "sleep_ms": sleep_ms}, **fields)


def ledger_runs(plan: Plan) -> dict[str, list[int]]:
    """Return the attempts whose run started the agent, per subtask key, in order."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT s.key, l.attempt FROM {TABLE} l JOIN plans_subtask s ON s.id = l.subtask_id"
            " WHERE s.plan_id = %s ORDER BY l.id",
            [plan.pk],
        )
        runs: dict[str, list[int]] = {}
        for key, attempt in cursor.fetchall():
            runs.setdefault(key, []).append(attempt)
    return runs


def ledger_problems(plan: Plan) -> list[str]:
    """Return what the ledger and the engine's records disagree on for this plan's ledger subtasks."""
    runs = ledger_runs(plan)
    problems = []
    for key, attempts in runs.items():
        twice = sorted(attempt for attempt, count in Counter(attempts).items() if count > 1)
        if twice:
            problems.append(f"{key!r}: attempt(s) {twice} started the agent more than once")
    for found in plan.subtasks.filter(agent="python", input__callable=CALLABLE):
        attempts = runs.get(found.key, [])
        if max(attempts, default=0) > found.attempts:
            problems.append(f"{found.key!r}: the agent ran attempt {max(attempts)} of {found.attempts}")
        if found.status == SubtaskStatus.DONE and (found.result or {}).get("attempt") != found.attempts:
            problems.append(f"{found.key!r}: its result {found.result} is not that of its last attempt")
    return problems
