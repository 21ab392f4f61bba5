"""Live plan events for Server-Sent Events: one LISTEN connection per process, fanned out.

Each commit that appends events sends NOTIFY plan_events '<plan_id>' (see events.py). One
asyncio task per process LISTENs and wakes the streams of that plan; each stream then
reads the new events with a short-lived database connection, so an idle stream holds no
connection at all and a new event reaches it as soon as it is committed.
"""

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from asgiref.sync import sync_to_async
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.http import StreamingHttpResponse

from execution.events import NOTIFY_CHANNEL
from execution.models import Event

logger = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
RECONNECT_S = 1.0
FETCH_LIMIT = 500


class PlanEventHub:
    """Wakes the streams of a plan when its events are committed."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None

    def subscribe(self, plan_id: str) -> asyncio.Event:
        wake = asyncio.Event()
        self._waiters[plan_id].add(wake)
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen(), name="plan-events-listener")
        return wake

    def unsubscribe(self, plan_id: str, wake: asyncio.Event) -> None:
        waiters = self._waiters.get(plan_id)
        if waiters is not None:
            waiters.discard(wake)
            if not waiters:
                del self._waiters[plan_id]

    def _wake(self, plan_ids: list[str]) -> None:
        for plan_id in plan_ids:
            for wake in self._waiters.get(plan_id, ()):
                wake.set()

    async def _listen(self) -> None:
        # Django's sync cursor factory and adapters do not apply to this async connection.
        params = {k: v for k, v in connection.get_connection_params().items() if k not in ("cursor_factory", "context")}
        while self._waiters:
            try:
                async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as listener:
                    await listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    # Anything committed while not listening is read now.
                    self._wake(list(self._waiters))
                    while self._waiters:
                        async for notify in listener.notifies(timeout=KEEPALIVE_S):
                            self._wake([notify.payload])
            except psycopg.Error as error:
                logger.warning("Event listener lost its connection (%s); reconnecting", error)
                await asyncio.sleep(RECONNECT_S)


_hubs: dict[asyncio.AbstractEventLoop, PlanEventHub] = {}


def hub() -> PlanEventHub:
    """Return the hub of the running event loop."""
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        for stale in [other for other in _hubs if other.is_closed()]:
            del _hubs[stale]
        _hubs[loop] = PlanEventHub()
    return _hubs[loop]


def _events_after(plan_id: str, after: int) -> list[dict[str, Any]]:
    try:
        return [
            {"seq": seq, "type": kind, "payload": payload, "created_at": created_at}
            for seq, kind, payload, created_at in Event.objects.filter(plan_id=plan_id, seq__gt=after)
            .order_by("seq")
            .values_list("seq", "type", "payload", "created_at")[:FETCH_LIMIT]
        ]
    finally:
        connection.close()  # held only while reading


def format_event(event: dict[str, Any]) -> str:
    data = json.dumps(event, cls=DjangoJSONEncoder)
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {data}\n\n"


async def event_stream(plan_id: str, *, after: int) -> AsyncIterator[str]:
    """Yield the plan's events after `after` as SSE messages, then each new one as it commits."""
    plans = hub()
    wake = plans.subscribe(plan_id)
    try:
        yield f"retry: {int(RECONNECT_S * 1000)}\n\n"
        last = after
        while True:
            wake.clear()
            events = await sync_to_async(_events_after)(plan_id, last)
            for event in events:
                last = event["seq"]
                yield format_event(event)
            if len(events) == FETCH_LIMIT:
                continue
            try:
                await asyncio.wait_for(wake.wait(), timeout=KEEPALIVE_S)
            except TimeoutError:
                yield ": keep-alive\n\n"
    finally:
        plans.unsubscribe(plan_id, wake)


def event_stream_response(plan_id: Any, *, after: int) -> StreamingHttpResponse:
    """Return the Server-Sent Events response that streams a plan's events after `after`."""
    # The stream reads with its own short-lived connections; hold none while idle.
    connection.close()
    response = StreamingHttpResponse(event_stream(str(plan_id), after=after), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
