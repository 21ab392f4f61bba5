"""A flood of anonymous /health/ calls costs neither database connections nor the workers' time."""

import asyncio
import base64
import json
import re
import threading

import httpx
import pytest
import redis
from django.conf import settings

from tests.conftest import METRICS_TOKEN

FLOOD = 300
AT_ONCE = 50


def new_connections(web) -> float:
    """Return how many database connections the web process has opened (its /metrics)."""
    response = httpx.get(f"{web.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30)
    assert response.status_code == 200, response.text
    found = re.search(
        r'^django_db_new_connections_total\{alias="default",vendor="postgresql"\} (\S+)$', response.text, re.M
    )
    return float(found.group(1)) if found else 0.0


class PingCounter:
    """Count the broadcast pings sent to the workers (Celery's pidbox channel in Redis) while it runs."""

    def __init__(self) -> None:
        self.pings = 0
        self._pubsub = redis.Redis.from_url(settings.CELERY_BROKER_URL).pubsub()
        self._pubsub.psubscribe("*celery.pidbox*")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._count, daemon=True)

    def _count(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is None:
                continue
            body = json.loads(base64.b64decode(json.loads(message["data"])["body"]))
            self.pings += body.get("method") == "ping"

    def __enter__(self) -> "PingCounter":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()


async def flood(url: str) -> list[int]:
    limits = httpx.Limits(max_connections=AT_ONCE)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        responses = await asyncio.gather(*(client.get(f"{url}/health/") for _ in range(FLOOD)))
    return [response.status_code for response in responses]


@pytest.mark.slow
def test_a_flood_of_anonymous_health_calls_opens_few_connections_and_pings_the_workers_rarely(web, transactional_db):
    opened = new_connections(web)
    with PingCounter() as counter:
        statuses = asyncio.run(flood(web.url))
    # Answered, up or down (no worker need run here), and never throttled: a 429 reads as down.
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    # A connection per readiness period (and one for /metrics), not one per call.
    assert new_connections(web) - opened <= 10
    # One ping per cache period (5 s), not one per call.
    assert counter.pings <= 3, counter.pings
