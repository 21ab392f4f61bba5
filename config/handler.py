"""Django's ASGI handler with the synchronous middleware chain of its WSGI handler, entered once a request.

Django's own ASGI handler builds an asynchronous chain. The service's middleware and views
are synchronous, so a request crossed between the event loop and its thread three times:
into the middleware, out again to the chain's asynchronous end, and back in for the view,
each crossing a hand-off through the loop's self-pipe and a copy of the request's context.
This handler runs Django's synchronous chain, the one `config.wsgi` runs, in the request's
thread in one crossing. The rest is Django's: the request's thread of its own (and database
connection), the request_started and request_finished signals, and the response, an event
stream's asynchronous body included, written out on the event loop.
"""

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase


class SynchronousChainHandler(ASGIHandler):
    """Serve each request through the synchronous middleware chain, entered once in the request's thread."""

    def load_middleware(self, is_async: bool = False) -> None:
        # Django asks for the asynchronous chain; the synchronous one is what the service's
        # middleware and views are written for (an asynchronous view would still be run).
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)
