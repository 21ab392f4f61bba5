"""Live plan events for Server-Sent Events: one LISTEN connection per process, one read per plan per wake.

Each commit that appends events sends NOTIFY plan_events '<plan_id>' (see events.py). One
asyncio task per process LISTENs; on a plan's NOTIFY it reads that plan's new events once,
with a short-lived database connection, keeps the latest of them in memory and wakes the
plan's streams, which take what they have not sent yet from there. A stream reads on its
own only to catch up (after `after` or Last-Event-ID, or when it fell behind what the
process keeps), so an idle stream holds no connection and a hundred streams of one plan
cost one read per commit, not a hundred.

A streamed model answer's text arrives on the same connection (NOTIFY plan_deltas, see
execution/deltas.py) and goes straight to each stream of the plan as `agent.message.delta`
messages: no `id:` line, nothing read or kept once sent, so never sent again. A stream
sends the deltas it holds before the stored events it reads next, the order PostgreSQL
delivered them in. A stream that cannot keep up loses the oldest (DELTAS_KEPT).

Limits: a user has at most EVENT_STREAMS_PER_USER streams open at once (slots in the
cache: shared between processes with CACHE_URL, each expiring on its own should a process
die), and a stream ends after EVENT_STREAM_MAX_AGE_S; the client reconnects with
Last-Event-ID and goes on where it was.
"""

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.http import StreamingHttpResponse

from execution.deltas import DELTA_CHANNEL, DELTA_EVENT
from execution.events import NOTIFY_CHANNEL
from execution.models import Event

logger = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
RECONNECT_S = 1.0
FETCH_LIMIT = 500
# A stream's slot outlives the stream's longest life by this much, then frees itself.
SLOT_SLACK_S = 60
# What a client refused a stream is told to wait before trying again.
SLOT_RETRY_AFTER_S = 5
# Event.seq is a bigint: a longer Last-Event-ID cannot be one of its values.
MAX_EVENT_ID_DIGITS = 18
# The live deltas a stream holds while its client reads slowly; older ones are dropped.
DELTAS_KEPT = 1000


@dataclass
class _Feed:
    """What this process has read of one plan's events for its live streams."""

    # The highest seq read for the streams (None until a stream has caught up and joined).
    head: int | None = None
    # The events kept are exactly those with floor < seq <= head.
    floor: int = 0
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=FETCH_LIMIT))
    waiters: set[asyncio.Event] = field(default_factory=set)
    # Each stream's live deltas not sent yet, as SSE messages.
    deltas: dict[asyncio.Event, deque[str]] = field(default_factory=dict)
    reading: asyncio.Task[None] | None = None
    # Woken again while reading, or before any stream joined: read (again) when possible.
    stale: bool = False


class PlanEventHub:
    """Reads a plan's new events once per NOTIFY and wakes the plan's streams."""

    def __init__(self) -> None:
        self._feeds: dict[str, _Feed] = {}
        self._listener: asyncio.Task[None] | None = None

    def subscribe(self, plan_id: str) -> asyncio.Event:
        wake = asyncio.Event()
        feed = self._feeds.setdefault(plan_id, _Feed())
        feed.waiters.add(wake)
        feed.deltas[wake] = deque(maxlen=DELTAS_KEPT)
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen(), name="plan-events-listener")
        return wake

    def unsubscribe(self, plan_id: str, wake: asyncio.Event) -> None:
        feed = self._feeds.get(plan_id)
        if feed is not None:
            feed.waiters.discard(wake)
            feed.deltas.pop(wake, None)
            if not feed.waiters:
                del self._feeds[plan_id]
                if feed.reading is not None:
                    feed.reading.cancel()

    def join(self, plan_id: str, last: int) -> None:
        """Start the plan's shared reads after `last`, where a stream caught up on its own, if none started yet."""
        feed = self._feeds[plan_id]
        if feed.head is None:
            feed.head = feed.floor = last
            if feed.stale:
                self._read(plan_id, feed)

    def after(self, plan_id: str, last: int) -> list[dict[str, Any]] | None:
        """Return the events kept after `last`; None when the stream fell behind what is kept."""
        feed = self._feeds[plan_id]
        if feed.head is None or last >= feed.head:
            return []
        if last < feed.floor:
            return None
        return [event for event in feed.events if event["seq"] > last]

    def deltas(self, plan_id: str, wake: asyncio.Event) -> list[str]:
        """Return (and forget) the live deltas a stream has not sent yet."""
        pending = self._feeds[plan_id].deltas.get(wake)
        if not pending:
            return []
        messages = list(pending)
        pending.clear()
        return messages

    def _delta(self, payload: str) -> None:
        try:
            data = json.loads(payload)
            feed = self._feeds.get(str(data["plan_id"]))
        except (ValueError, TypeError, KeyError):
            return
        if feed is None:
            return
        message = format_delta(data)
        for wake, pending in feed.deltas.items():
            pending.append(message)
            wake.set()

    def _wake(self, plan_ids: list[str]) -> None:
        for plan_id in plan_ids:
            feed = self._feeds.get(plan_id)
            if feed is not None:
                self._read(plan_id, feed)

    def _read(self, plan_id: str, feed: _Feed) -> None:
        feed.stale = True
        if feed.head is not None and (feed.reading is None or feed.reading.done()):
            feed.reading = asyncio.get_running_loop().create_task(self._read_new(plan_id, feed))

    async def _read_new(self, plan_id: str, feed: _Feed) -> None:
        while feed.stale and feed.head is not None:
            feed.stale = False
            try:
                events = await sync_to_async(_events_after)(plan_id, feed.head)
            except Exception as error:  # the database is away: try again, as the listener does
                logger.warning("Reading the events of plan %s failed (%s); trying again", plan_id, error)
                feed.stale = True
                await asyncio.sleep(RECONNECT_S)
                continue
            for event in events:
                if len(feed.events) == feed.events.maxlen:
                    feed.floor = feed.events[0]["seq"]
                feed.events.append(event)
                feed.head = event["seq"]
            if len(events) == FETCH_LIMIT:
                feed.stale = True
            for wake in feed.waiters:
                wake.set()

    async def _listen(self) -> None:
        # Django's sync cursor factory and adapters do not apply to this async connection.
        params = {k: v for k, v in connection.get_connection_params().items() if k not in ("cursor_factory", "context")}
        while self._feeds:
            try:
                async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as listener:
                    await listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    await listener.execute(f"LISTEN {DELTA_CHANNEL}")
                    # Anything committed while not listening is read now.
                    self._wake(list(self._feeds))
                    while self._feeds:
                        async for notify in listener.notifies(timeout=KEEPALIVE_S):
                            if notify.channel == DELTA_CHANNEL:
                                self._delta(notify.payload)
                            else:
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


def format_delta(data: dict[str, Any]) -> str:
    """Return a live delta as an SSE message: no `id:` line, so a reconnecting client is not sent it again."""
    fields = ("plan_id", "subtask_id", "subtask_key", "step", "delta")
    return f"event: {DELTA_EVENT}\ndata: {json.dumps({key: data.get(key) for key in fields})}\n\n"


def last_event_id(header: str) -> int | None:
    """Return a Last-Event-ID header's sequence number, or None when it is not one (ignored, never an error)."""
    header = header.strip()
    if header.isascii() and header.isdigit() and len(header) <= MAX_EVENT_ID_DIGITS:
        return int(header)
    return None


async def event_stream(plan_id: str, *, after: int, max_age_s: float) -> AsyncGenerator[str, None]:
    """Yield the plan's events after `after` as SSE messages, then each new one as it commits, for `max_age_s`."""
    plans = hub()
    loop = asyncio.get_running_loop()
    ends = loop.time() + max_age_s
    wake = plans.subscribe(plan_id)
    try:
        yield f"retry: {int(RECONNECT_S * 1000)}\n\n"
        last = after
        caught_up = False
        while True:
            wake.clear()
            for message in plans.deltas(plan_id, wake):
                yield message
            events = plans.after(plan_id, last) if caught_up else None
            if events is None:
                # Catching up (or fallen behind what the process keeps): this stream's own read.
                events = await sync_to_async(_events_after)(plan_id, last)
                if len(events) < FETCH_LIMIT and not caught_up:
                    caught_up = True
                    plans.join(plan_id, events[-1]["seq"] if events else last)
            for event in events:
                last = event["seq"]
                yield format_event(event)
            if events:
                continue
            left = ends - loop.time()
            if left <= 0:
                return  # the client reconnects with Last-Event-ID
            try:
                await asyncio.wait_for(wake.wait(), timeout=min(KEEPALIVE_S, left))
            except TimeoutError:
                if loop.time() < ends:
                    yield ": keep-alive\n\n"
    finally:
        plans.unsubscribe(plan_id, wake)


def stream_slot_take(user_id: int) -> str | None:
    """Take one of the user's EVENT_STREAMS_PER_USER stream slots; return its key, or None when all are taken."""
    lifetime = int(settings.EVENT_STREAM_MAX_AGE_S) + SLOT_SLACK_S
    for index in range(settings.EVENT_STREAMS_PER_USER):
        key = f"event-stream-slot:{user_id}:{index}"
        if cache.add(key, 1, timeout=lifetime):
            return key
    return None


class _EventStreamResponse(StreamingHttpResponse):
    """A stream that frees its slot when Django closes it, however the stream ended."""

    def __init__(self, *args: Any, on_close: Callable[[], object], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    def close(self) -> None:
        try:
            self._on_close()
        finally:
            super().close()


def event_stream_response(plan_id: Any, *, after: int, slot: str) -> StreamingHttpResponse:
    """Return the Server-Sent Events response that streams a plan's events after `after`, holding `slot`."""
    # The stream reads with its own short-lived connections; hold none while idle.
    connection.close()
    response = _EventStreamResponse(
        event_stream(str(plan_id), after=after, max_age_s=settings.EVENT_STREAM_MAX_AGE_S),
        content_type="text/event-stream",
        on_close=lambda: cache.delete(slot),
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
