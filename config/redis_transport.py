"""kombu's Redis transport, keeping one redis-py client object per connection pool instead of one per operation.

kombu's Redis channel builds a new redis-py client for every publish batch, and in a worker
for every message it receives and every ack, all on the channel's one connection pool; redis-py
fills its table of response callbacks anew for each, about 0.1 ms of CPU. A client object holds
no connection of its own (each command takes one from the pool and gives it back) and may be
shared between threads, so the channel keeps one per pool: a new pool (after a fork, or once
the channel has dropped its pools) gets a new client. Used for redis:// and rediss:// broker
URLs (CELERY_BROKER_TRANSPORT in config/settings.py); the transport is kombu's in every other way.
"""

from typing import Any
from urllib.parse import urlsplit

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _kept_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the channel's own BRPOP and pub/sub clients, which kombu keeps already
            return super()._create_client(asynchronous=True)  # type: ignore[misc]  # (not in the stubs)
        pool = self.pool
        client = self._kept_client
        if client is None or client.connection_pool is not pool:
            client = self._kept_client = super()._create_client()  # type: ignore[misc]
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


def broker_transport(broker_url: str) -> str | None:
    """Return the transport for a broker URL: this module's for Redis, else None (kombu's, from the URL's scheme)."""
    return f"{__name__}:Transport" if urlsplit(broker_url).scheme in ("redis", "rediss") else None
