"""What the engine measures for /metrics in Redis, shared by every worker process and container.

Workers run in many processes (and containers), which no web process can read, so nothing is
kept in a worker's memory for long: the decision-to-resume latency of a run that resumes a
decision is noted when it starts, and the process's notes go to a histogram in the broker's
Redis once a second (one script call for them all, from a thread of the process's own, and
as the process ends); the queues' lengths are read from Redis when /metrics is scraped.
"""

import atexit
import logging
import os
import threading
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

# How often a process writes the resumes it has noted (and once more as it ends).
RESUME_WRITE_EVERY_S = 1.0

# Resumes noted, one per KEYS[2..]: its mark, with its latency and the bounds it counts under in
# ARGV. Counts a decision's first resumed run only: a later attempt of the same run finds its mark.
_OBSERVE = """
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', 86400) then
    for bound in string.gmatch(ARGV[2 * i - 2], '%S+') do redis.call('HINCRBY', KEYS[1], bound, 1) end
    redis.call('HINCRBY', KEYS[1], 'count', 1)
    redis.call('HINCRBYFLOAT', KEYS[1], 'sum', ARGV[2 * i - 3])
  end
end
return 1
"""

_client: redis.Redis | None = None
_script: Any = None
_noted: list[tuple[str, float]] = []  # (approval id, seconds) not yet written
_noted_lock = threading.Lock()
_write_lock = threading.Lock()  # one write at a time: once resumes_write() returns, nothing noted is in flight
_writer_pid: int | None = None


def broker_redis() -> redis.Redis:
    """Return a client of the broker's Redis (one per process; redis-py reconnects after a fork)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2)
    return _client


def resume_observe(tool_calls: list[ToolCallEntry]) -> None:
    """Note a run that resumes after a decision for the decision-to-resume histogram (written within a second)."""
    decided = [entry for entry in tool_calls if entry.get("decided_at") and entry.get("approval_id")]
    if not decided:
        return
    last = max(decided, key=lambda entry: entry["decided_at"])
    try:
        latency = max(0.0, time.time() - datetime.fromisoformat(last["decided_at"]).timestamp())
    except ValueError as error:  # a metric is never worth failing a run for
        logger.debug("Could not measure the decision-to-resume latency: %s", error)
        return
    with _noted_lock:
        _noted.append((str(last["approval_id"]), latency))
    _writer_start()


def resumes_write() -> None:
    """Write the resumes this process has noted to the histogram in Redis, in one script call."""
    with _write_lock:
        with _noted_lock:
            noted = _noted[:]
            _noted.clear()
        if noted:
            _write(noted)


def _write(noted: list[tuple[str, float]]) -> None:
    global _script
    keys = [RESUME_KEY, *(RESUMED_KEY.format(approval_id=approval_id) for approval_id, _ in noted)]
    args: list[str] = []
    for _, latency in noted:
        args += [repr(latency), " ".join(str(bound) for bound in RESUME_BUCKETS if latency <= bound)]
    try:
        if _script is None:
            _script = broker_redis().register_script(_OBSERVE)  # sent once, then called by its digest
        _script(keys=keys, args=args)
    except redis.RedisError as error:  # a metric is never worth holding a worker for
        logger.debug("Could not record %d decision-to-resume latencies: %s", len(noted), error)


def _writer_start() -> None:
    """Start this process's writer thread, once (a forked process starts its own)."""
    global _writer_pid
    with _noted_lock:
        if _writer_pid == os.getpid():
            return
        _writer_pid = os.getpid()
    threading.Thread(target=_write_every, name="resume-metrics", daemon=True).start()


def _write_every() -> None:
    while True:
        time.sleep(RESUME_WRITE_EVERY_S)
        resumes_write()


def _forked() -> None:
    """In a forked process: no notes of the parent's, no writer yet, and a lock nobody holds."""
    global _noted_lock, _write_lock, _writer_pid
    _noted_lock = threading.Lock()
    _write_lock = threading.Lock()
    _noted.clear()
    _writer_pid = None


os.register_at_fork(after_in_child=_forked)
atexit.register(resumes_write)  # what a process noted in its last second (a worker's pool processes: worker.py)


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
