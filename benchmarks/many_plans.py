"""`many_plans`: 100 plans of 10 no-op subtasks submitted at once, against 100 raw chords of 10 tasks.

The plans are submitted over HTTP by 8 client threads and start at once (no approval); the
time runs from the first request to the last plan's completion. The raw chords are sent by
8 threads too, and end with a stamp each, in the minimal Celery app (benchmarks/raw_celery.py)
on a worker of its own with as many processes as the engine's workers.
"""

import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks import raw_celery
from benchmarks.bench import Bench, new_key, scenario_result, wait_stamps
from benchmarks.client import Api, in_threads, wait_finished
from benchmarks.report import Result
from benchmarks.shapes import layered_plan, no_ops

PLANS, SUBTASKS = 100, 10
THREADS = 8


def run(bench: Bench) -> Result:
    count = bench.scaled(PLANS, 2)
    total = count * SUBTASKS
    plan = layered_plan(no_ops(1, SUBTASKS), goal="benchmark: many plans", requires_approval=False)
    plan["max_parallel"] = SUBTASKS
    result = scenario_result("many_plans", f"{count} plans of {SUBTASKS} no-op subtasks submitted at once")
    for rep in range(bench.repeat):
        bench.stack.settle()
        start = time.time()
        plan_ids = in_threads(bench.api, [plan] * count, Api.submit, threads=THREADS)
        submitted = time.time() - start
        engine = wait_finished(plan_ids) - start
        bench.stack.settle()

        bench.raw_app()
        key = new_key("many-raw")
        raw_start = time.time()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda _, key=key: raw_celery.send_batches(batches=[[0] * SUBTASKS], key=key), range(count)))
        raw = max(wait_stamps(key, count)) - raw_start

        result.add("engine_subtasks_per_s", total / engine, "subtasks/s")
        result.add("raw_tasks_per_s", total / raw, "tasks/s")
        result.add("engine_s", engine, "s")
        result.add("raw_s", raw, "s")
        result.add("submit_s", submitted, "s")
        result.add("ratio", engine / raw, "x")
        print(
            f"  rep {rep + 1}: engine {total / engine:.0f} subtasks/s ({engine:.2f} s, of which submitting "
            f"{submitted:.2f} s), raw {total / raw:.0f} tasks/s ({raw:.2f} s): {engine / raw:.1f}x",
            flush=True,
        )
    result.fact("plans", count)
    result.fact("subtasks", total)
    return result
