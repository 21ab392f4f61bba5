"""`canvas`: one chord per batch built when the previous batch is done (what the engine does)
against the whole plan nested up front as chain(chord, chord, ...), each carrying the rest.

10 levels x 100 no-op raw tasks in the minimal Celery app (benchmarks/raw_celery.py, Redis
results) on its worker of as many processes as the engine's workers, side by side.
"""

import time

from benchmarks import raw_celery
from benchmarks.bench import Bench, new_key, scenario_result, wait_stamps
from benchmarks.harness import RedisWatch, megabytes
from benchmarks.report import Result
from benchmarks.shapes import no_ops

LEVELS, WIDTH = 10, 100


def run(bench: Bench) -> Result:
    width = bench.scaled(WIDTH, 2)
    result = scenario_result("canvas", f"canvas shape: {LEVELS} levels x {width} no-op raw tasks")
    result.fact("raw_processes", bench.raw_app())
    batches = no_ops(LEVELS, width)
    for rep in range(bench.repeat):
        line = []
        for name, send in (("per_batch", raw_celery.send_batches), ("nested", raw_celery.send_nested)):
            bench.raw_app()
            bench.raw_workers.settle()
            key = new_key(f"canvas-{name}")
            with RedisWatch() as watch:
                start = time.time()
                send(batches=batches, key=key)
                seconds = wait_stamps(key, 1)[0] - start
            result.add(f"{name}_s", seconds, "s")
            result.add(f"{name}_redis_written_mb", watch.bytes_written / 1e6, "MB")
            line.append(f"{name} {seconds:.2f} s, Redis written {megabytes(watch.bytes_written)}")
        result.add("ratio", result.figures["nested_s"].samples[-1] / result.figures["per_batch_s"].samples[-1], "x")
        print(f"  rep {rep + 1}: " + "; ".join(line), flush=True)
    return result
