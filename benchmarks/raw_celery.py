"""The raw baseline as a user writing the canvas by hand would have it: a minimal Celery app.

No Django and no project code: Redis (RAW_BROKER_URL, else CELERY_BROKER_URL) as broker and result backend, Celery's
defaults otherwise. Its workers start in the benchmarks folder, so that importing it does not
import the benchmarks package (which sets Django up):
`celery -A raw_celery worker --queues raw --concurrency 1`.
"""

import functools
import os
import time

import redis
from celery import Celery, chord, group

QUEUE = "raw"
# The benchmark's process (and `make bench`) name the broker as CELERY_BROKER_URL; its workers as RAW_BROKER_URL.
BROKER = os.environ.get("RAW_BROKER_URL") or os.environ["CELERY_BROKER_URL"]

# Not the current app of the benchmark's process, whose app is the service's.
app = Celery("raw", broker=BROKER, backend=BROKER, set_as_current=False)
app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=True)


@functools.cache
def marks() -> redis.Redis:
    return redis.Redis.from_url(BROKER)


@app.task(name="raw.noop")
def noop(*args: object) -> None:
    """Do nothing: the baseline measures Celery, not the work."""


@app.task(name="raw.stamp")
def stamp(*args: object, key: str) -> None:
    """Record when this task started (wall clock) at the end of a Redis list."""
    marks().rpush(key, time.time())


@app.task(name="raw.next_batch")
def next_batch(*args: object, sizes: list[int], index: int, key: str) -> None:
    """Chord body of one batch: send the next batch's chord, or stamp the run's end."""
    if index + 1 < len(sizes):
        send_batches(sizes=sizes, key=key, index=index + 1)
    else:
        marks().rpush(key, time.time())


@app.task(name="raw.start")
def start(*, sizes: list[int], key: str) -> None:
    """Send the first batch: the chords are sent from the raw app's own workers, as a user's code would."""
    send_batches(sizes=sizes, key=key)


def send_batches(*, sizes: list[int], key: str, index: int = 0) -> None:
    """Send batch `index` (of `sizes[index]` no-ops) as one chord whose body sends the next."""
    body = next_batch.si(sizes=sizes, index=index, key=key)
    chord(group([noop.si() for _ in range(sizes[index])]), body).apply_async()


def send_levels(*, sizes: list[int], key: str) -> None:
    """Start a run of these batches (one message; the benchmark's process sends no chord itself)."""
    start.apply_async(kwargs={"sizes": sizes, "key": key})


def send_stamp(*, key: str) -> None:
    stamp.apply_async(kwargs={"key": key})
