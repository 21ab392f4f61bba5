"""`scaling`: 400 subtasks of 50 ms with 1, 2 and 4 subtask worker processes, engine and raw.

One plan of independent subtasks, so the engine runs it in batches of max_parallel; the raw
baseline runs the same batches as chords in sequence in the minimal Celery app. The subtask
worker is restarted with each concurrency; the control worker and beat stay as they are. The
raw worker is restarted with as many processes as the subtask worker has: N processes run the
sleeps on each side (the raw chords' bodies take a turn among them).
"""

from benchmarks.bench import Bench, engine_run, scenario_result
from benchmarks.harness import SUBTASK_CONCURRENCY
from benchmarks.report import Result
from benchmarks.shapes import engine_batches, layered_plan

SUBTASKS, SLEEP_MS = 400, 50
CONCURRENCIES = (1, 2, 4)


def run(bench: Bench) -> Result:
    count = bench.scaled(SUBTASKS, 4)
    levels = [[SLEEP_MS] * count]
    result = scenario_result("scaling", f"{count} subtasks of {SLEEP_MS} ms with {CONCURRENCIES} worker processes")
    throughput: dict[int, list[float]] = {}
    try:
        for processes in CONCURRENCIES:
            bench.stack.settle()
            bench.stack.restart_subtasks(processes)
            throughput[processes] = []
            for rep in range(bench.repeat):
                bench.stack.settle()
                engine = engine_run(bench.api, layered_plan(levels, goal="benchmark: scaling"))
                bench.stack.settle()
                raw = bench.raw_run(engine_batches(levels), processes=processes)
                result.add(f"engine_{processes}p_per_s", count / engine, "subtasks/s")
                result.add(f"raw_{processes}p_per_s", count / raw, "tasks/s")
                result.add(f"ratio_{processes}p", engine / raw, "x")
                throughput[processes].append(count / engine)
                print(
                    f"  {processes} process(es), rep {rep + 1}: engine {count / engine:.1f} subtasks/s "
                    f"({engine:.2f} s), raw {count / raw:.1f} tasks/s ({raw:.2f} s); "
                    f"ideal {processes * 1000 / SLEEP_MS:.0f}/s",
                    flush=True,
                )
    finally:
        if bench.stack.concurrency != SUBTASK_CONCURRENCY:
            bench.stack.restart_subtasks(SUBTASK_CONCURRENCY)
    for processes in CONCURRENCIES[1:]:
        for single, many in zip(throughput[1], throughput[processes], strict=True):
            result.add(f"speedup_{processes}p", many / single, "x")
    result.fact("raw_processes", {f"{processes}p": processes for processes in CONCURRENCIES})
    for processes in CONCURRENCIES[1:]:
        raw_single = result.figures["raw_1p_per_s"].samples
        raw_many = result.figures[f"raw_{processes}p_per_s"].samples
        for single, many in zip(raw_single, raw_many, strict=True):
            result.add(f"raw_speedup_{processes}p", many / single, "x")
    return result
