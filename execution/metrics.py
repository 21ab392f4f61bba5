"""What the engine measures for /metrics in Redis, shared by every worker process and container.

Workers run in many processes (and containers), which no web process can read, so nothing is
counted in a worker's memory: the decision-to-resume latency is added to a histogram kept in
the broker's Redis when the resumed run starts (one script call, only for runs that resume a
decision), and the queues' lengths are read from Redis when /metrics is scraped.
"""

import logging
import time
from datetime import datetime
from typing import Any

import redis
from django.conf import settings
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel

from execution.agents.base import ToolCallEntry

logger = logging.getLogger(__name__)

QUEUES = ("subtasks", "control", "webhooks")
# Seconds from a person's decision to the start of the run it resumes (queue wait included).
RESUME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
RESUME_KEY = "metrics:resume_latency"  # a hash: a counter per bucket, plus "count" and "sum"
RESUMED_KEY = "metrics:resumed:{approval_id}"  # set once per decision, so a retry is not counted again

# Counts a decision's first resumed run only: a later attempt of the same run finds its mark.
_OBSERVE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', 86400) then
  for i = 2, #ARGV do redis.call('HINCRBY', KEYS[1], ARGV[i], 1) end
  redis.call('HINCRBY', KEYS[1], 'count', 1)
  redis.call('HINCRBYFLOAT', KEYS[1], 'sum', ARGV[1])
end
return 1
"""

_client: redis.Redis | None = None


def broker_redis() -> redis.Redis:
    """Return a client of the broker's Redis (one per process; redis-py reconnects after a fork)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2)
    return _client


def resume_observe(tool_calls: list[ToolCallEntry]) -> None:
    """Count a run that resumes after a decision in the decision-to-resume histogram (no database query)."""
    decided = [entry for entry in tool_calls if entry.get("decided_at") and entry.get("approval_id")]
    if not decided:
        return
    last = max(decided, key=lambda entry: entry["decided_at"])
    try:
        latency = max(0.0, time.time() - datetime.fromisoformat(last["decided_at"]).timestamp())
        buckets = [str(bound) for bound in RESUME_BUCKETS if latency <= bound]
        keys = [RESUME_KEY, RESUMED_KEY.format(approval_id=last["approval_id"])]
        broker_redis().eval(_OBSERVE, len(keys), *keys, repr(latency), *buckets)
    except (redis.RedisError, ValueError) as error:  # a metric is never worth failing a run for
        logger.debug("Could not record the decision-to-resume latency: %s", error)


def resume_histogram() -> dict[str, Any]:
    """Return the histogram: cumulative counts per upper bound (+Inf last), the count and the sum."""
    raw: dict[bytes, bytes] = broker_redis().hgetall(RESUME_KEY)  # type: ignore[assignment]
    stored = {key.decode(): value.decode() for key, value in raw.items()}
    count = int(stored.get("count", 0))
    buckets = [(bound, int(stored.get(str(bound), 0))) for bound in RESUME_BUCKETS]
    return {"buckets": [*buckets, (float("inf"), count)], "count": count, "sum": float(stored.get("sum", 0))}


def queue_lengths() -> dict[str, int]:
    """Return how many messages wait in each queue, over all its priority lists."""
    client = broker_redis()
    pipe = client.pipeline(transaction=False)
    lists = {
        queue: [queue, *(f"{queue}{RedisChannel.sep}{step}" for step in PRIORITY_STEPS if step)] for queue in QUEUES
    }
    for names in lists.values():
        for name in names:
            pipe.llen(name)
    counts = iter(pipe.execute())
    return {queue: sum(next(counts) for _ in names) for queue, names in lists.items()}
