"""`result_backend`: django-db (chord parts counted under a row lock) against Redis (counted natively).

The same plan, 10 dependency levels of 100 no-op subtasks, runs through the engine once per
backend and repetition: on the shared stack for Redis, then on a stack of its own for django-db
(the shared one is stopped meanwhile: both would consume the same queues).
"""

from benchmarks.bench import Bench, engine_run, scenario_result
from benchmarks.harness import RedisWatch, megabytes
from benchmarks.report import Result
from benchmarks.shapes import layered_plan, no_ops

LEVELS, WIDTH = 10, 100


def run(bench: Bench) -> Result:
    width = bench.scaled(WIDTH, 2)
    plan = layered_plan(no_ops(LEVELS, width), goal="benchmark: result backend")
    count = LEVELS * width
    result = scenario_result("result_backend", f"django-db against Redis results, {LEVELS} levels x {width} subtasks")
    # Redis first, on the shared stack: then the shared stack stops for django-db's own.
    for _ in range(bench.repeat):
        bench.stack.settle()
        with RedisWatch() as watch:
            seconds = engine_run(bench.api, plan)
        result.add("redis_s", seconds, "s")
        result.add("redis_redis_written_mb", watch.bytes_written / 1e6, "MB")
    with bench.own_stack(result_backend="django-db") as (stack, api):
        for _ in range(bench.repeat):
            stack.settle()
            with RedisWatch() as watch:
                seconds = engine_run(api, plan)
            result.add("django_db_s", seconds, "s")
            result.add("django_db_redis_written_mb", watch.bytes_written / 1e6, "MB")
    for db, redis in zip(result.figures["django_db_s"].samples, result.figures["redis_s"].samples, strict=True):
        result.add("ratio", db / redis, "x")
    for name in ("django_db", "redis"):
        seconds = result.figures[f"{name}_s"].median
        written = result.figures[f"{name}_redis_written_mb"].median * 1e6
        print(
            f"  {name}: {seconds:.2f} s ({seconds / count * 1000:.1f} ms per subtask), "
            f"Redis written {megabytes(written)}"
        )
    print(f"  ratio django-db / redis: {result.figures['ratio'].median:.2f}x", flush=True)
    return result
