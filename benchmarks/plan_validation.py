"""How long validating and batching a large plan takes: 10,000 subtasks, 50,000 edges.

Also measured at a tenth and a half of that size, to show the cost grows linearly.
"""

import random
import statistics
import time

from plans.validation import validate_plan

AGENTS = {"script"}


def make_plan(subtasks: int, edges_per_subtask: int, seed: int = 7) -> dict:
    rng = random.Random(seed)
    items = []
    for i in range(subtasks):
        deps = sorted({f"s{rng.randrange(i)}" for _ in range(edges_per_subtask)}) if i >= edges_per_subtask else []
        items.append({"key": f"s{i}", "description": f"step {i}", "agent": "script", "depends_on": deps})
    return {"goal": "benchmark", "max_parallel": 64, "subtasks": items}


def measure(data: dict, repeats: int = 5) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        validate_plan(data, agents=AGENTS)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def run() -> None:
    print("plan validation + batching (median of 5)")
    results = {}
    for size in (1_000, 5_000, 10_000):
        data = make_plan(size, 5)
        edges = sum(len(item["depends_on"]) for item in data["subtasks"])
        results[size] = measure(data)
        print(f"  {size:>6} subtasks, {edges:>6} edges: {results[size] * 1000:7.1f} ms")
    print(f"  ratio 10,000 / 1,000 subtasks: {results[10_000] / results[1_000]:.1f}x (linear would be 10x)")


if __name__ == "__main__":
    run()
