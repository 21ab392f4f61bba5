"""Result backend: django-db (chord parts counted under a row lock) or Redis (counted natively).

The same plan, 10 dependency levels of 100 subtasks (20 chords: max_parallel is 64),
runs through the engine with real workers once per backend, side by side.
"""

import json
import time

from django.conf import settings

from benchmarks.harness import RedisWatch, in_subprocess, megabytes, redis_results_url, workers
from execution.services import plan_submit
from plans.models import Plan
from tests.factories import UserFactory

LEVELS, WIDTH = 10, 100


def shape() -> dict:
    subtasks = [
        {
            "key": f"l{level}-{i}",
            "description": "benchmark step",
            "agent": "script",
            "depends_on": [f"l{level - 1}-{i}"] if level else [],
        }
        for level in range(LEVELS)
        for i in range(WIDTH)
    ]
    return {"goal": "benchmark", "requires_approval": False, "max_parallel": 64, "subtasks": subtasks}


def measure() -> dict:
    """Run the plan once with the result backend of this process's settings."""
    owner = UserFactory(username=f"bench-{time.time_ns()}")
    with workers(result_backend=settings.CELERY_RESULT_BACKEND), RedisWatch() as watch:
        start = time.perf_counter()
        plan = plan_submit(owner=owner, data=shape())
        while Plan.objects.values_list("status", flat=True).get(pk=plan.pk) not in ("completed", "failed", "cancelled"):
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
    status = Plan.objects.values_list("status", flat=True).get(pk=plan.pk)
    return {"seconds": elapsed, "status": status, "written": watch.bytes_written, "peak": watch.peak_growth}


def run() -> dict[str, float]:
    print(f"result backend: {LEVELS} levels x {WIDTH} subtasks through the engine (4 subtask + 2 control processes)")
    timings = {}
    for name, url in (("django-db", "django-db"), ("redis", redis_results_url())):
        figures = in_subprocess("benchmarks.result_backend", result_backend=url)
        timings[name] = seconds = figures["seconds"]
        per_subtask = seconds / (LEVELS * WIDTH) * 1000
        print(
            f"  {name:>9}: {seconds:6.1f} s  ({per_subtask:5.1f} ms per subtask, plan {figures['status']})  "
            f"Redis written {megabytes(figures['written'])}, peak growth {megabytes(figures['peak'])}"
        )
    print(f"  ratio django-db / redis: {timings['django-db'] / timings['redis']:.2f}x")
    return timings


if __name__ == "__main__":
    print(json.dumps(measure()))
