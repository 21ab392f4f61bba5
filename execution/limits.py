"""Provider limits shared by every worker: concurrency slots, model calls per minute, Retry-After hold-backs.

- `max_concurrency`: a run takes one of the agent's N slots, a PostgreSQL advisory lock on
  (agent, slot) held by the run's own database connection, the same kind of lock as the
  run's lease (execution/engine/runs.py). Taking one is one atomic statement; a run gives
  its slot back when it ends, and PostgreSQL drops it with the connection when the
  worker's process dies, so a crashed run's slot is free at once, with no expiry to tune
  against runs that last minutes. Any process reads the slots in use from pg_locks.
- `requests_per_minute`: a sliding window of the model calls of the last 60 seconds, a
  sorted set in the broker's Redis, checked and added to by one script (atomic across
  workers, timed by Redis's clock); entries expire with the window.
- A 429 with Retry-After: a key in Redis that expires when the wait is over; every run of
  the agent waits for it, the one that got the 429 retrying as usual.

A run over a limit before it starts is deferred by the engine (its message is sent again
with a countdown, its subtask stays queued, no worker waits). A run already going, about
to call its model again, waits for the window or the hold-back in its worker instead: its
conversation is in memory, and giving the worker back would mean starting over.
"""

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.db import connection

from execution.agents.limits import AgentLimits
from execution.metrics import broker_redis

logger = logging.getLogger(__name__)

WINDOW_MS = 60_000
REQUESTS_KEY = "limits:{agent}:requests"  # a sorted set: one member per model call, scored by its time (ms)
HOLD_KEY = "limits:{agent}:hold"  # set for as long as a Retry-After asks
DEFERRALS_KEY = "metrics:limit_deferrals"  # a hash: runs deferred, per agent
SLOT_NAMESPACE = "agent-slot:"  # the advisory lock's first key is hashtext(namespace + agent)

# Take a place in the window if there is room: return 0, or the milliseconds until there is.
# ARGV: limit, member, take (1) or only look (0), the window (ms).
_WINDOW = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  if ARGV[3] == '1' then
    redis.call('ZADD', KEYS[1], ms, ARGV[2])
    redis.call('PEXPIRE', KEYS[1], window)
  end
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - ms)
"""

# Hold back until ARGV[1] milliseconds from now, unless a longer hold-back is already set.
_HOLD = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""


@dataclass(frozen=True)
class Admission:
    """Whether a run may start: its slot (None when the agent has no concurrency limit), or how long to wait."""

    admitted: bool
    slot: int | None = None
    wait_s: float = 0.0


# --- before a run starts -------------------------------------------------------------------------


def run_admit(*, agent: str, limits: AgentLimits) -> Admission:
    """Let a run of `agent` start if every limit has room, taking a slot; else say how long to wait.

    The Redis checks come first and only look (each model call of the run takes its own
    place in the window, model_call_admit), then the slot is taken.
    """
    held = hold_remaining_s(agent) if limits.shares_retry_after else 0.0
    if held > 0:
        return Admission(admitted=False, wait_s=held)
    if limits.requests_per_minute and (wait := _window(agent, limits.requests_per_minute, take=False)) > 0:
        return Admission(admitted=False, wait_s=wait)
    slot = None
    if limits.max_concurrency:
        slot = slot_take(agent, limits.max_concurrency)
        if slot is None:
            return Admission(admitted=False, wait_s=settings.EXECUTION_LIMIT_DEFER_S)
    return Admission(admitted=True, slot=slot)


def deferral_count(agent: str) -> None:
    """Count a deferred run for /metrics."""
    try:
        broker_redis().hincrby(DEFERRALS_KEY, agent, 1)
    except redis.RedisError as error:  # a metric is never worth failing a run for
        logger.debug("Could not count a deferral: %s", error)


# --- the slots (PostgreSQL) ----------------------------------------------------------------------


def slot_take(agent: str, slots: int) -> int | None:
    """Take a free slot of the agent on this process's connection; return it, or None when all are taken.

    One statement: the slots are tried in order and the first lock taken ends the scan.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT slot FROM generate_series(0, %s - 1) AS slot"
            " WHERE pg_try_advisory_lock(hashtext(%s), slot) LIMIT 1",
            [slots, SLOT_NAMESPACE + agent],
        )
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def slot_release(agent: str, slot: int) -> None:
    """Give a slot back (taken by slot_take on this connection)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(hashtext(%s), %s)", [SLOT_NAMESPACE + agent, slot])


def slots_in_use(agents: dict[str, int]) -> dict[str, int]:
    """Return how many slots of each agent (name: its number of slots) runs hold now, whichever process."""
    if not agents:
        return {}
    names = list(agents)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT agent.name, count(lock.objid) FROM unnest(%s::text[], %s::int[]) AS agent(name, slots)"
            " LEFT JOIN pg_locks lock ON lock.locktype = 'advisory' AND lock.granted AND lock.objsubid = 2"
            "  AND lock.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            "  AND lock.classid::bigint = (hashtext(%s || agent.name)::bigint & 4294967295)"
            "  AND lock.objid::bigint < agent.slots"
            " GROUP BY agent.name",
            [names, [agents[name] for name in names], SLOT_NAMESPACE],
        )
        return {name: int(count) for name, count in cursor.fetchall()}


# --- model calls and hold-backs (Redis) ----------------------------------------------------------


def model_call_admit(*, agent: str, limits: AgentLimits, deadline_s: float | None = None) -> None:
    """Wait, in this worker, until the agent may call its model: no hold-back, and room in its window.

    For the calls of a run already going (the run's start was checked by run_admit).
    Gives up waiting at `deadline_s` seconds from now (the call then goes ahead: the
    endpoint's own 429 is the last word).
    """
    if not limits.active:
        return
    give_up = time.monotonic() + (deadline_s if deadline_s is not None else WINDOW_MS / 1000)
    while True:
        wait = hold_remaining_s(agent) if limits.shares_retry_after else 0.0
        if not wait and limits.requests_per_minute:
            wait = _window(agent, limits.requests_per_minute, take=True)
        if wait <= 0 or time.monotonic() + wait > give_up:
            return
        time.sleep(wait)


def hold_back(*, agent: str, seconds: float) -> None:
    """Hold back every run of the agent for `seconds` (a Retry-After), unless a longer hold-back is set."""
    milliseconds = int(seconds * 1000)
    if milliseconds <= 0:
        return
    try:
        broker_redis().eval(_HOLD, 1, HOLD_KEY.format(agent=agent), milliseconds)
    except redis.RedisError as error:
        logger.warning("Could not hold back agent %s after a Retry-After: %s", agent, error)


def hold_remaining_s(agent: str) -> float:
    """Return how long the agent is still held back (0 when it is not)."""
    try:
        remaining = int(broker_redis().pttl(HOLD_KEY.format(agent=agent)))  # type: ignore[arg-type]
    except redis.RedisError as error:
        logger.warning("Could not read the hold-back of agent %s: %s", agent, error)
        return 0.0
    return remaining / 1000 if remaining > 0 else 0.0


def _window(agent: str, limit: int, *, take: bool) -> float:
    try:
        wait_ms = broker_redis().eval(
            _WINDOW, 1, REQUESTS_KEY.format(agent=agent), limit, uuid.uuid4().hex, "1" if take else "0", WINDOW_MS
        )
    except redis.RedisError as error:
        logger.warning("Could not read the request window of agent %s: %s", agent, error)
        return 0.0
    return int(wait_ms) / 1000  # type: ignore[arg-type]


def requests_last_minute(agents: list[str]) -> dict[str, int]:
    """Return how many model calls each agent made in the last 60 seconds."""
    if not agents:
        return {}
    client = broker_redis()
    seconds, microseconds = client.time()  # the window's clock
    now_ms = seconds * 1000 + microseconds // 1000
    pipe = client.pipeline(transaction=False)
    for agent in agents:
        pipe.zcount(REQUESTS_KEY.format(agent=agent), now_ms - WINDOW_MS, "+inf")
    return dict(zip(agents, (int(count) for count in pipe.execute()), strict=True))


def limits_usage(limited: dict[str, AgentLimits]) -> dict[str, dict[str, Any]]:
    """Return each limited agent's limits and their current use (null where the agent sets no such limit)."""
    running = slots_in_use({name: limits.max_concurrency for name, limits in limited.items() if limits.max_concurrency})
    paced = [name for name, limits in limited.items() if limits.requests_per_minute]
    try:
        calls = requests_last_minute(paced)
    except redis.RedisError as error:
        logger.warning("Could not read the request windows: %s", error)
        calls = {}
    return {
        name: {
            **limits.describe(),
            "running": running.get(name) if limits.max_concurrency else None,
            "requests_last_minute": calls.get(name) if limits.requests_per_minute else None,
            "held_for_s": hold_remaining_s(name) if limits.shares_retry_after else None,
        }
        for name, limits in limited.items()
    }


def deferrals() -> dict[str, int]:
    """Return the runs deferred so far, per agent (for /metrics)."""
    raw: dict[Any, Any] = broker_redis().hgetall(DEFERRALS_KEY)  # type: ignore[assignment]
    return {key.decode(): int(value) for key, value in raw.items()}
