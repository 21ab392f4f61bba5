"""The raw baseline as a user writing the canvas by hand would have it: a minimal Celery app.

No Django and no project code: Redis (RAW_BROKER_URL, else CELERY_BROKER_URL) as broker and result backend, Celery's
defaults otherwise. Its workers start in the benchmarks folder, so that importing it does not
import the benchmarks package (which sets Django up):
`celery -A raw_celery worker --queues raw --concurrency N` (benchmarks/raw_workers.py).
"""

import functools
import os
import time

import redis
from celery import Celery, chain, chord, group
from celery.canvas import Signature

QUEUE = "raw"
# The benchmark's process (and `make bench`) name the broker as CELERY_BROKER_URL; its workers as RAW_BROKER_URL.
BROKER = os.environ.get("RAW_BROKER_URL") or os.environ["CELERY_BROKER_URL"]

# Not the current app of the benchmark's process, whose app is the service's.
app = Celery("raw", broker=BROKER, backend=BROKER, set_as_current=False)
# Celery prefers CELERY_RESULT_BACKEND from the environment to `backend`: in the benchmark's process
# that is the service's results database, where the raw workers would never see a chord's size.
app.backend_cls = BROKER
app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=True)


@functools.cache
def marks() -> redis.Redis:
    return redis.Redis.from_url(BROKER)


@app.task(name="raw.noop")
def noop(*args: object) -> None:
    """Do nothing: the baseline measures Celery, not the work."""


@app.task(name="raw.sleep")
def sleep(*args: object, ms: int) -> None:
    """Stand for a subtask of `ms` milliseconds, as the script agent's sleep_ms does."""
    time.sleep(ms / 1000)


@app.task(name="raw.stamp")
def stamp(*args: object, key: str) -> None:
    """Record when this task started (wall clock) at the end of a Redis list."""
    marks().rpush(key, time.time())


@app.task(name="raw.next_batch")
def next_batch(*args: object, batches: list[list[int]], index: int, key: str) -> None:
    """Chord body of one batch: send the next batch's chord, or stamp the run's end."""
    if index + 1 < len(batches):
        send_batches(batches=batches, key=key, index=index + 1)
    else:
        marks().rpush(key, time.time())


@app.task(name="raw.start")
def start(*, batches: list[list[int]], key: str) -> None:
    """Send the first batch: the chords are sent from the raw app's own workers, as a user's code would."""
    send_batches(batches=batches, key=key)


def run_signature(ms: int) -> Signature:
    return sleep.si(ms=ms) if ms else noop.si()


def send_batches(*, batches: list[list[int]], key: str, index: int = 0) -> None:
    """Send batch `index` as one chord whose body sends the next from a raw worker, then stamps under `key`.

    `batches` lists each batch's tasks by their sleep in milliseconds (0: a no-op).
    """
    body = next_batch.si(batches=batches, index=index, key=key)
    chord(group([run_signature(ms) for ms in batches[index]], app=app), body, app=app).apply_async()


def send_levels(*, sizes: list[int], key: str) -> None:
    """Start a run of no-op batches of these sizes (one message; the benchmark's process sends no chord itself)."""
    start.apply_async(kwargs={"batches": [[0] * size for size in sizes], "key": key})


def send_nested(*, batches: list[list[int]], key: str) -> None:
    """Send the whole run up front as chain(chord, chord, ..., stamp), each chord carrying the rest."""
    chords = [chord(group([run_signature(ms) for ms in batch], app=app), noop.si(), app=app) for batch in batches]
    chain(*chords, stamp.si(key=key), app=app).apply_async()


def send_stamp(*, key: str) -> None:
    """Send one task that stamps its start under `key`."""
    stamp.apply_async(kwargs={"key": key})
