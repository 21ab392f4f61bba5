"""`validation`: how long validating and batching a large plan takes, 10,000 subtasks and 50,000 edges.

Also measured at a tenth and a half of that size, to show the cost grows linearly. Pure code:
no server, no worker.
"""

import random
import statistics
import time

from benchmarks.bench import Bench, scenario_result
from benchmarks.report import Result
from plans.validation import validate_plan

AGENTS = {"script"}
SIZES = (1_000, 5_000, 10_000)


def make_plan(subtasks: int, edges_per_subtask: int, seed: int = 7) -> dict:
    rng = random.Random(seed)
    items = []
    for i in range(subtasks):
        deps = sorted({f"s{rng.randrange(i)}" for _ in range(edges_per_subtask)}) if i >= edges_per_subtask else []
        items.append({"key": f"s{i}", "description": f"step {i}", "agent": "script", "depends_on": deps})
    return {"goal": "benchmark", "max_parallel": 64, "subtasks": items}


def timed(data: dict, repeats: int = 5) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        validate_plan(data, agents=AGENTS)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def run(bench: Bench) -> Result:
    sizes = [bench.scaled(size, 10) for size in SIZES]
    result = scenario_result("validation", "plan validation + batching (median of 5 per repetition)")
    for _ in range(bench.repeat):
        for size in sizes:
            data = make_plan(size, 5)
            result.add(f"s{size}_ms", timed(data) * 1000, "ms")
        result.add(
            "ratio", result.figures[f"s{sizes[-1]}_ms"].samples[-1] / result.figures[f"s{sizes[0]}_ms"].samples[-1], "x"
        )
    for size in sizes:
        edges = sum(len(item["depends_on"]) for item in make_plan(size, 5)["subtasks"])
        print(f"  {size:>6} subtasks, {edges:>6} edges: {result.figures[f's{size}_ms'].median:7.1f} ms")
    print(
        f"  ratio {sizes[-1]} / {sizes[0]} subtasks: {result.figures['ratio'].median:.1f}x "
        f"(linear: {sizes[-1] / sizes[0]:.0f}x)"
    )
    return result
