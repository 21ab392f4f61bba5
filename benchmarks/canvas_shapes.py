"""`canvas`: one chord per batch built when the previous batch is done (what the engine does)
against the whole plan nested up front as chain(chord, chord, ...), each carrying the rest.

10 levels x 100 no-op raw tasks on the shared workers, Redis result backend, side by side.
"""

import time

from celery import chain, chord, group, signature

from benchmarks.bench import Bench, new_key, scenario_result, wait_stamps
from benchmarks.harness import RedisWatch, megabytes
from benchmarks.report import Result
from benchmarks.shapes import no_ops
from benchmarks.tasks import send_batches

LEVELS, WIDTH = 10, 100


def per_batch(width: int, key: str) -> None:
    send_batches(batches=no_ops(LEVELS, width), key=key)


def nested(width: int, key: str) -> None:
    chords = [
        chord(
            group(signature("benchmarks.noop", queue="subtasks", immutable=True) for _ in range(width)),
            signature("benchmarks.noop", queue="control", immutable=True),
        )
        for _ in range(LEVELS)
    ]
    chain(*chords, signature("benchmarks.stamp", kwargs={"key": key}, queue="control", immutable=True)).apply_async()


def run(bench: Bench) -> Result:
    width = bench.scaled(WIDTH, 2)
    result = scenario_result("canvas", f"canvas shape: {LEVELS} levels x {width} no-op raw tasks")
    for rep in range(bench.repeat):
        line = []
        for name, send in (("per_batch", per_batch), ("nested", nested)):
            bench.stack.settle()
            key = new_key(f"canvas-{name}")
            with RedisWatch() as watch:
                start = time.time()
                send(width, key)
                seconds = wait_stamps(key, 1)[0] - start
            result.add(f"{name}_s", seconds, "s")
            result.add(f"{name}_redis_written_mb", watch.bytes_written / 1e6, "MB")
            line.append(f"{name} {seconds:.2f} s, Redis written {megabytes(watch.bytes_written)}")
        result.add("ratio", result.figures["nested_s"].samples[-1] / result.figures["per_batch_s"].samples[-1], "x")
        print(f"  rep {rep + 1}: " + "; ".join(line), flush=True)
    return result
