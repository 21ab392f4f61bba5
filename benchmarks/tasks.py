"""Raw Celery tasks run by the engine's own workers (--include benchmarks.tasks): overhead's `raw_in_app_s`.

The baselines themselves run in the minimal app of benchmarks/raw_celery.py; these tell what
running them in the service's app and processes costs, and mark the resume agent's runs.
"""

import functools
import time

import redis
from celery import chord, group, shared_task, signature
from celery.canvas import Signature
from django.conf import settings


@functools.cache
def marks() -> redis.Redis:
    """Return the Redis (the broker's) where raw tasks and probes stamp their times."""
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


@shared_task(name="benchmarks.noop")
def noop(*args: object, **kwargs: object) -> None:
    """Do nothing: the baseline measures Celery, not the work."""


@shared_task(name="benchmarks.sleep")
def sleep(*args: object, ms: int = 0) -> None:
    """Stand for a subtask of `ms` milliseconds, as the script agent's sleep_ms does."""
    if ms:
        time.sleep(ms / 1000)


@shared_task(name="benchmarks.stamp")
def stamp(*args: object, key: str) -> None:
    """Record when this task started (wall clock) at the end of a Redis list."""
    marks().rpush(key, time.time())


@shared_task(name="benchmarks.next_batch")
def next_batch(*args: object, batches: list[list[int]], index: int, key: str) -> None:
    """Chord callback of one batch: send the next batch's chord, or stamp the run's end."""
    if index + 1 < len(batches):
        send_batches(batches=batches, key=key, index=index + 1)
    else:
        stamp(key=key)


def run_signature(ms: int) -> Signature:
    if ms:
        return signature("benchmarks.sleep", kwargs={"ms": ms}, queue="subtasks", immutable=True)
    return signature("benchmarks.noop", queue="subtasks", immutable=True)


def send_batches(*, batches: list[list[int]], key: str, index: int = 0) -> None:
    """Send batch `index` as one chord whose body sends the next: the engine's shape without the engine.

    `batches` lists each batch's tasks by their sleep in milliseconds (0: a no-op).
    """
    callback = signature(
        "benchmarks.next_batch",
        kwargs={"batches": batches, "index": index, "key": key},
        queue="control",
        immutable=True,
    )
    chord(group(run_signature(ms) for ms in batches[index]), callback).apply_async()
