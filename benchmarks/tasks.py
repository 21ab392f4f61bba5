"""Tasks for the canvas benchmark only (workers load them with --include benchmarks.tasks)."""

import redis
from celery import chord, group, shared_task, signature
from django.conf import settings


@shared_task(name="benchmarks.noop")
def noop(*args: object, **kwargs: object) -> None:
    """Do nothing: the benchmark measures the canvas, not the work."""


@shared_task(name="benchmarks.next_batch")
def next_batch(*args: object, level: int, levels: int, width: int, key: str) -> None:
    """Chord callback of one batch: send the next batch's chord, or mark the run done."""
    if level + 1 < levels:
        send_batch(level=level + 1, levels=levels, width=width, key=key)
    else:
        redis.Redis.from_url(settings.CELERY_BROKER_URL).set(key, 1)


def send_batch(*, level: int, levels: int, width: int, key: str) -> None:
    header = group(signature("benchmarks.noop", queue="subtasks") for _ in range(width))
    callback = signature(
        "benchmarks.next_batch",
        kwargs={"level": level, "levels": levels, "width": width, "key": key},
        queue="control",
        immutable=True,
    )
    chord(header, callback).apply_async()
