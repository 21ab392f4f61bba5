"""The plan event log: append events in the caller's transaction and announce them on commit."""

from collections.abc import Sequence
from functools import partial
from typing import Any
from uuid import UUID

from django.db import connection, transaction

from execution import canvas
from execution.models import Event

# Listeners (the live event stream) LISTEN on this channel; the payload is "<plan_id>:<seq>".
NOTIFY_CHANNEL = "plan_events"


def events_append(*, plan_id: UUID, events: Sequence[tuple[str, dict[str, Any]]]) -> list[Event]:
    """Append events to a plan's log, numbered after its last one; announce them on commit.

    Call inside the transaction that makes the change the events describe. Numbers are
    taken from the plan row, whose lock is held until commit, so a plan's events commit
    in sequence order and a reader that saw event N never misses an earlier one later.
    On commit, listeners hear a NOTIFY and a plan with a callback_url gets its webhooks.
    """
    if not events:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE plans_plan SET last_event_seq = last_event_seq + %s WHERE id = %s"
            " RETURNING last_event_seq, callback_url",
            [len(events), plan_id],
        )
        last, callback_url = cursor.fetchone()
        first = last - len(events) + 1
        created = Event.objects.bulk_create(
            [
                Event(plan_id=plan_id, seq=first + offset, type=kind, payload={"plan_id": str(plan_id), **payload})
                for offset, (kind, payload) in enumerate(events)
            ]
        )
        # NOTIFY is transactional: listeners hear it only if and when this commits.
        cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, f"{plan_id}:{last}"])
    if callback_url:
        transaction.on_commit(partial(canvas.send_webhooks, plan_id, [event.seq for event in created]), robust=True)
    return created


def event_append(*, plan_id: UUID, type: str, payload: dict[str, Any]) -> Event:
    """Append one event to a plan's log (see events_append)."""
    return events_append(plan_id=plan_id, events=[(type, payload)])[0]
