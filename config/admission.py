"""A bound on the requests a web process works on at once, so that a burst cannot exhaust PostgreSQL.

Under ASGI, Django runs each request's synchronous view in a thread of its own, on a database
connection of its own: 500 clients connecting at once (a web process restarted under 500 open
event streams, say) would open 500 connections, past PostgreSQL's `max_connections`. `Admission`
lets at most WEB_MAX_CONCURRENT_REQUESTS requests in at a time and queues the others on the
event loop, which costs them nothing but the wait. A request holds its place until its response
starts: an event stream gives it back once its headers are out, since the stream then reads
through the process's one listener (api/stream.py), not a connection of its own.
"""

import asyncio
from typing import Any

from api.probes import ASGIApp


class Admission:
    """Let at most `limit` HTTP requests into `app` at once, each until its response starts; queue the rest."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit
        self._places: asyncio.Semaphore | None = None  # made on the server's event loop

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.limit <= 0:
            await self.app(scope, receive, send)
            return
        if self._places is None:
            self._places = asyncio.Semaphore(self.limit)
        places = self._places
        await places.acquire()
        held = True

        async def send_then_free(message: dict[str, Any]) -> None:
            nonlocal held
            if held and message["type"] == "http.response.start":
                held = False
                places.release()
            await send(message)

        try:
            await self.app(scope, receive, send_then_free)
        finally:
            if held:
                places.release()
