"""`overhead` and `uneven`: 10 levels of subtasks through the engine against raw chords, one per level.

The raw chords run in the minimal Celery app (benchmarks/raw_celery.py) on a worker of its own with
as many processes as the engine's subtask and control workers together.
overhead: no-op subtasks, so what is measured is what the engine and Celery cost; the same chords
run inside the engine's own workers too (`raw_in_app_s`), to tell the app's cost from the engine's.
uneven: seeded random 0-50 ms sleeps, so the makespan can be set against its ideal, with and
without the barrier between batches.
"""

from http import HTTPStatus

from benchmarks.bench import Bench, engine_run, raw_in_app_run, scenario_result
from benchmarks.client import Api
from benchmarks.report import Result
from benchmarks.shapes import MAX_PARALLEL, barrier_bound, engine_batches, layered_plan, lower_bound, no_ops
from benchmarks.shapes import seeded_sleeps as sleeps_of

LEVELS, WIDTH = 10, 100
SEED = 10


def check_max_parallel(api: Api, result: Result) -> None:
    """Record that 100 is refused: the largest max_parallel a plan may ask for is used instead."""
    plan = layered_plan(no_ops(1, 1))
    response = api.send("POST", "/plans/", json={**plan, "max_parallel": 100})
    result.fact("max_parallel", MAX_PARALLEL)
    if response.status_code == HTTPStatus.BAD_REQUEST:
        result.note(f"max_parallel 100 is refused (400); {MAX_PARALLEL}, the largest allowed, is used")
    else:
        result.note(f"max_parallel 100 answered {response.status_code}; {MAX_PARALLEL} is used all the same")


def overhead(bench: Bench) -> Result:
    width = bench.scaled(WIDTH, 2)
    levels = no_ops(LEVELS, width)
    count = LEVELS * width
    result = scenario_result("overhead", f"{LEVELS} levels x {width} no-op subtasks, approval to completed")
    check_max_parallel(bench.api, result)
    result.fact("subtasks", count)
    result.fact("raw_processes", bench.raw_app())
    for rep in range(bench.repeat):
        bench.stack.settle()
        engine = engine_run(bench.api, layered_plan(levels))
        bench.stack.settle()
        raw = bench.raw_run(levels)
        raw_batches = bench.raw_run(engine_batches(levels))
        in_app = raw_in_app_run(levels)
        result.add("engine_s", engine, "s")
        result.add("raw_s", raw, "s")
        result.add("raw_batches_s", raw_batches, "s")
        result.add("raw_in_app_s", in_app, "s")
        result.add("ratio", engine / raw, "x")
        result.add("engine_per_subtask_ms", engine / count * 1000, "ms")
        result.add("raw_per_task_ms", raw / count * 1000, "ms")
        print(
            f"  rep {rep + 1}: engine {engine:.2f} s, raw app one chord per level {raw:.2f} s "
            f"(per {MAX_PARALLEL}-chunk like the engine {raw_batches:.2f} s; in the engine's workers "
            f"{in_app:.2f} s): {engine / raw:.1f}x",
            flush=True,
        )
    return result


def uneven(bench: Bench) -> Result:
    width = bench.scaled(WIDTH, 2)
    levels = sleeps_of(LEVELS, width, seed=SEED)
    processes = bench.stack.concurrency
    critical, work, bound = lower_bound(levels, processes)
    batch_bound = barrier_bound(engine_batches(levels), processes)
    level_bound = barrier_bound(levels, processes)
    result = scenario_result("uneven", f"{LEVELS} levels x {width} subtasks sleeping 0-50 ms (seed {SEED})")
    result.fact("critical_path_s", critical)
    result.fact("work_s", work)
    result.fact("processes", processes)
    result.fact("lower_bound_s", bound)
    result.fact("barrier_bound_s", batch_bound)
    result.fact("raw_barrier_bound_s", level_bound)
    result.fact("barrier_cost_s", batch_bound - bound)
    result.fact("raw_processes", bench.raw_app())
    print(
        f"  ideal: critical path {critical:.2f} s, work {work:.2f} s / {processes} processes -> {bound:.2f} s; "
        f"with a barrier per {MAX_PARALLEL}-batch {batch_bound:.2f} s, per level {level_bound:.2f} s",
        flush=True,
    )
    for rep in range(bench.repeat):
        bench.stack.settle()
        engine = engine_run(bench.api, layered_plan(levels))
        bench.stack.settle()
        raw = bench.raw_run(levels)
        result.add("engine_s", engine, "s")
        result.add("raw_s", raw, "s")
        result.add("engine_over_bound", engine / bound, "x")
        result.add("raw_over_bound", raw / bound, "x")
        result.add("engine_over_barrier_bound", engine / batch_bound, "x")
        result.add("ratio", engine / raw, "x")
        print(
            f"  rep {rep + 1}: engine {engine:.2f} s ({engine / bound:.2f}x the bound), "
            f"raw app {raw:.2f} s ({raw / bound:.2f}x)",
            flush=True,
        )
    result.note("the bounds are for the engine's subtask processes; the raw worker runs the sleeps on raw_processes")
    return result
