"""The plan event log: append events in the caller's transaction and announce them on commit."""

import json
from collections.abc import Sequence
from functools import partial
from typing import Any
from uuid import UUID

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction

from execution import canvas

# Listeners (the live event stream) LISTEN on this channel; the payload is the plan id.
NOTIFY_CHANNEL = "plan_events"

# One round trip: number the events from the plan's counter (its row stays locked until
# commit), insert them, and queue the NOTIFY (PostgreSQL sends it at commit, once per
# plan and transaction).
APPEND_SQL = """
WITH counter AS (
    UPDATE plans_plan SET last_event_seq = last_event_seq + %(count)s WHERE id = %(plan)s
    RETURNING last_event_seq, callback_url
), inserted AS (
    INSERT INTO execution_event (plan_id, seq, type, payload, created_at)
    SELECT %(plan)s, counter.last_event_seq - %(count)s + event.position, event.type, event.payload,
           statement_timestamp()
    FROM counter, unnest(%(types)s::varchar[], %(payloads)s::jsonb[]) WITH ORDINALITY AS event(type, payload, position)
), notified AS (
    SELECT pg_notify(%(channel)s, %(plan_text)s) FROM counter
)
SELECT last_event_seq, callback_url FROM counter, notified
"""


def events_append(*, plan_id: UUID, events: Sequence[tuple[str, dict[str, Any]]]) -> list[int]:
    """Append events to a plan's log, numbered after its last one; return their numbers.

    Call inside the transaction that makes the change the events describe. Numbers are
    taken from the plan row, whose lock is held until commit, so a plan's events commit
    in sequence order and a reader that saw event N never misses an earlier one later.
    On commit, listeners hear a NOTIFY and a plan with a callback_url gets its webhooks.
    """
    if not events:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            APPEND_SQL,
            {
                "count": len(events),
                "plan": plan_id,
                "plan_text": str(plan_id),
                "channel": NOTIFY_CHANNEL,
                "types": [kind for kind, _ in events],
                "payloads": [
                    json.dumps({"plan_id": str(plan_id), **payload}, cls=DjangoJSONEncoder) for _, payload in events
                ],
            },
        )
        last, callback_url = cursor.fetchone()
    seqs = list(range(last - len(events) + 1, last + 1))
    if callback_url:
        transaction.on_commit(partial(canvas.send_webhooks, plan_id, seqs), robust=True)
    return seqs


def event_append(*, plan_id: UUID, type: str, payload: dict[str, Any]) -> int:
    """Append one event to a plan's log and return its number (see events_append)."""
    return events_append(plan_id=plan_id, events=[(type, payload)])[0]
