"""Django's ASGI handler serving each request as its WSGI handler would: in one call on a pooled thread.

Django's own ASGI handler makes a thread for each request (asgiref's ThreadSensitiveContext)
and crosses between the event loop and that thread for each synchronous step: the
request_started signal, the middleware (its asynchronous chain, which leaves the thread again
for the view), the response's close (request_finished). The service's middleware and views
are synchronous, so this handler does a request's synchronous work in one call, on one of a
fixed set of threads, as a threaded WSGI server does: request_started, Django's synchronous
chain (the one `config.wsgi` runs) and, unless the response streams, its close, which gives
the request's database connection back before the bytes go out on the event loop. A streaming
response (an event stream's asynchronous body, a file) gives its connection back as its view
returns, is sent as Django sends it, listening for the client's disconnect, and is closed
after its last chunk; while it streams it holds no thread.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.db import close_old_connections
from django.http import FileResponse, HttpResponseBase
from django.urls import set_script_prefix


class SynchronousChainHandler(ASGIHandler):
    """Serve each request through the synchronous middleware chain, in one call on one of `threads` threads."""

    def __init__(self, *, threads: int) -> None:
        super().__init__()
        # Threads start as requests need them (none before the server's processes fork).
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="request")

    def load_middleware(self, is_async: bool = False) -> None:
        # Django asks for the asynchronous chain; the synchronous one is what the service's
        # middleware and views are written for (an asynchronous view would still be run).
        super().load_middleware(is_async=False)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        try:
            response = await self.in_thread(self.serve)(scope, body_file)
            if response.streaming:
                await self.stream(response, receive, send)
            else:
                await self.send_response(response, send)
        finally:
            body_file.close()

    def in_thread(self, call: Any) -> Any:
        """Return `call` as a coroutine function run on one of the handler's threads (with the caller's context)."""
        return sync_to_async(call, thread_sensitive=False, executor=self.executor)

    def serve(self, scope: dict[str, Any], body_file: Any) -> HttpResponseBase:
        """On a request thread: request_started, the middleware and the view, and a whole response closed."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, refusal = self.create_request(scope, body_file)  # a request, or the answer refusing it
        if request is None:
            response = cast(HttpResponseBase, refusal)
        else:
            response = self.get_response(request)
            response._handler_class = self.__class__  # type: ignore[attr-defined]
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size  # the server chunks what it sends
        if response.streaming:
            # The thread serves other requests while this one streams: its connection goes back
            # now, as request_finished would give it back (a stream reads with connections of its own).
            close_old_connections()
        else:
            response.close()  # request_finished: the request's connection goes back to the pool
        return response

    async def stream(self, response: HttpResponseBase, receive: Any, send: Any) -> None:
        """Send a streaming response until its end or the client's disconnect, then close it."""
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(self.send_response(response, send)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if not task.done():
                    task.cancel()
                with suppress(RequestAborted, asyncio.CancelledError):  # the client went away: the stream ends here
                    await task
        finally:
            await self.in_thread(response.close)()
