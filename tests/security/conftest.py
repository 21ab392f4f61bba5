"""Two web processes as users run them, sharing their limits through CACHE_URL, and clients from chosen addresses."""

import os
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis

from scripts.processes import WebServer, current_database_url
from tests.support.cluster import FAST

# Low limits, so a flood reaches them in a few requests.
TOKEN_RATE = 4
STREAMS_PER_USER = 10
SHORT_STREAM_AGE_S = 2


@dataclass(frozen=True)
class Guarded:
    """`first` and `second` serve the same database and share their limits (CACHE_URL); `second` ends streams early."""

    first: WebServer
    second: WebServer
    cache_url: str


@pytest.fixture(scope="session")
def guarded_web(django_db_setup, django_db_blocker, tmp_path_factory, test_agents) -> Iterator[Guarded]:
    broker = os.environ["CELERY_BROKER_URL"]
    cache_url = broker.rsplit("/", 1)[0] + "/3"
    redis.Redis.from_url(cache_url).flushdb()
    with django_db_blocker.unblock():
        database_url = current_database_url()
    env = {
        **os.environ,
        **FAST,
        "DATABASE_URL": database_url,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "EXECUTION_AGENTS_FILE": str(test_agents.path),
        "CACHE_URL": cache_url,
        "API_THROTTLE_TOKEN": f"{TOKEN_RATE}/hour",
        "EVENT_STREAMS_PER_USER": str(STREAMS_PER_USER),
    }
    env.pop("DJANGO_DEBUG", None)
    first_dir, second_dir = tmp_path_factory.mktemp("guarded-first"), tmp_path_factory.mktemp("guarded-second")
    servers = [
        WebServer({**env, "DJANGO_STATIC_ROOT": str(first_dir / "static")}, first_dir),
        WebServer(
            {
                **env,
                "DJANGO_STATIC_ROOT": str(second_dir / "static"),
                "EVENT_STREAM_MAX_AGE_S": str(SHORT_STREAM_AGE_S),
            },
            second_dir,
        ),
    ]
    try:
        for server in servers:
            server.wait_ready()
        yield Guarded(first=servers[0], second=servers[1], cache_url=cache_url)
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def guarded(guarded_web, transactional_db) -> Iterator[Guarded]:
    """The two web processes, with no count left over from an earlier test."""
    redis.Redis.from_url(guarded_web.cache_url).flushdb()
    yield guarded_web
    redis.Redis.from_url(guarded_web.cache_url).flushdb()


def client_from(address: str, base_url: str, **options) -> httpx.Client:
    """Return an HTTP client whose connections come from `address` (any of 127.0.0.0/8 reaches a loopback server)."""
    options.setdefault("timeout", 30)
    return httpx.Client(base_url=base_url, transport=httpx.HTTPTransport(local_address=address), **options)
