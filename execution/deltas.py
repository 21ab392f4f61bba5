"""Live text of a model's answer: `agent.message.delta` messages sent with PostgreSQL NOTIFY, never stored.

A streamed answer's text goes to the plan's live event streams as it arrives, coalesced
to at most one message per EXECUTION_STREAM_DELTA_INTERVAL_S per subtask. Each message is
one `NOTIFY plan_deltas '<json>'` on the worker's connection, outside any transaction, so
it reaches the listeners at once: no row, no sequence number, nothing to replay. The web
process already LISTENs for stored events on the same connection (api/stream.py), so the
deltas take that wake-up path, and PostgreSQL delivers one sender's notifications in the
order they were sent: a subtask's deltas reach a stream before the `subtask.completed`
its worker commits afterwards.

Publishing is best effort: a NOTIFY that fails (the database away for a moment) drops
that piece of live text and never fails the run; the stored answer is whole either way.
"""

import json
import logging
import time
from typing import Any

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

DELTA_CHANNEL = "plan_deltas"
DELTA_EVENT = "agent.message.delta"
# A NOTIFY payload holds less than 8000 bytes: longer text goes out in pieces of at most
# this many characters (6 bytes each at worst in JSON, well under the limit).
PIECE_CHARS = 1000


class DeltaPublisher:
    """Send one subtask's answer text as it arrives, coalesced, in order."""

    def __init__(self, *, plan_id: str, subtask_id: str, subtask_key: str, interval_s: float | None = None) -> None:
        self.head = {"plan_id": plan_id, "subtask_id": subtask_id, "subtask_key": subtask_key}
        self.interval_s = settings.EXECUTION_STREAM_DELTA_INTERVAL_S if interval_s is None else interval_s
        self.step = 0
        self.pending = ""
        self.sent_at = float("-inf")
        self.enabled = bool(plan_id and subtask_id)

    def start(self, step: int) -> None:
        """Begin the text of model call `step` (the subtask's model calls count from 0)."""
        self.flush()
        self.step = step

    def add(self, text: str) -> None:
        """Take more text of the current answer; send what is held when the interval has passed."""
        if not text or not self.enabled:
            return
        self.pending += text
        if time.monotonic() - self.sent_at >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        """Send the text held back, if any (at the end of an answer, so none is left behind)."""
        if not self.pending or not self.enabled:
            self.pending = ""
            return
        text, self.pending = self.pending, ""
        self.sent_at = time.monotonic()
        try:
            with connection.cursor() as cursor:
                for start in range(0, len(text), PIECE_CHARS):
                    payload = {**self.head, "step": self.step, "delta": text[start : start + PIECE_CHARS]}
                    cursor.execute("SELECT pg_notify(%s, %s)", [DELTA_CHANNEL, json.dumps(payload)])
        except Exception as error:  # live text is a convenience: the run goes on without it
            logger.warning(
                "Live answer text of subtask %s not sent (%s); sending no more", self.head["subtask_id"], error
            )
            self.enabled = False


def delta_publisher(context: dict[str, Any]) -> DeltaPublisher:
    """Return the publisher of the subtask a context describes."""
    return DeltaPublisher(
        plan_id=str(context.get("plan_id") or ""),
        subtask_id=str(context.get("subtask_id") or ""),
        subtask_key=str(context.get("subtask_key") or ""),
    )
