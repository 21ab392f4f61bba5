"""Canvas shape: one chord per batch built when the previous batch is done (what the engine does)
versus the whole plan nested up front as chain(chord, chord, ...), each carrying the rest.

10 levels x 100 no-op tasks, Redis result backend, same workers, side by side.
"""

import json
import time
import uuid

import redis
from celery import chain, chord, group, signature
from django.conf import settings

from benchmarks.harness import RedisWatch, in_subprocess, megabytes, redis_results_url, workers
from benchmarks.tasks import send_batch

LEVELS, WIDTH = 10, 100
TIMEOUT_S = 600


def wait_for_key(key: str) -> None:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    deadline = time.monotonic() + TIMEOUT_S
    while not client.get(key):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the run did not finish within {TIMEOUT_S}s")
        time.sleep(0.02)


def per_batch() -> None:
    key = f"bench:{uuid.uuid4()}"
    send_batch(level=0, levels=LEVELS, width=WIDTH, key=key)
    wait_for_key(key)


def nested() -> None:
    key = f"bench:{uuid.uuid4()}"
    chords = [
        chord(
            group(signature("benchmarks.noop", queue="subtasks") for _ in range(WIDTH)),
            signature("benchmarks.noop", queue="control"),
        )
        for _ in range(LEVELS)
    ]
    done = signature(
        "benchmarks.next_batch",
        kwargs={"level": LEVELS, "levels": LEVELS, "width": WIDTH, "key": key},
        queue="control",
        immutable=True,
    )
    chain(*chords, done).apply_async()
    wait_for_key(key)


def measure() -> dict:
    """Run both shapes with the workers and the result backend of this process's settings."""
    figures = {}
    with workers(result_backend=settings.CELERY_RESULT_BACKEND, include="benchmarks.tasks"):
        for name, send in (("chord per batch", per_batch), ("nested chain", nested)):
            with RedisWatch() as watch:
                start = time.perf_counter()
                send()
                seconds = time.perf_counter() - start
            figures[name] = {"seconds": seconds, "written": watch.bytes_written, "peak": watch.peak_growth}
    return figures


def run() -> dict[str, float]:
    print(f"canvas shape: {LEVELS} levels x {WIDTH} no-op tasks, Redis result backend")
    figures = in_subprocess("benchmarks.canvas_shapes", result_backend=redis_results_url())
    for name, figure in figures.items():
        print(
            f"  {name:>15}: {figure['seconds']:6.1f} s  Redis written {megabytes(figure['written'])}, "
            f"peak growth {megabytes(figure['peak'])}"
        )
    ratio = figures["nested chain"]["seconds"] / figures["chord per batch"]["seconds"]
    print(f"  ratio nested / per batch: {ratio:.2f}x")
    return {name: figure["seconds"] for name, figure in figures.items()}


if __name__ == "__main__":
    print(json.dumps(measure()))
