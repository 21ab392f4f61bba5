"""`revise`: revising a draft of 1,000 and of 10,000 subtasks (5 edges each) over HTTP, and reading its revisions.

The PATCH sends the whole list with one subtask's input changed, one removed and one added, with
If-Match: the service validates it as a submission, replaces the draft's subtasks, writes the
revision and its diff, and asks for a new approval. Against the submission of the same plan
(POST), which writes revision 1.
"""

import time
from collections.abc import Callable
from typing import TypeVar

from benchmarks.bench import Bench, scenario_result
from benchmarks.report import Result
from benchmarks.shapes import layered_plan, no_ops

SIZES = (1_000, 10_000)
EDGES_PER_SUBTASK, WIDTH = 5, 100
T = TypeVar("T")


def timed(call: Callable[[], T]) -> tuple[float, T]:
    began = time.perf_counter()
    value = call()
    return time.perf_counter() - began, value


def measure(bench: Bench, result: Result, count: int) -> None:
    width = min(WIDTH, max(2, count // 10))
    plan = layered_plan(no_ops(count // width, width), goal=f"revise {count}", edges=EDGES_PER_SUBTASK * count)
    created, plan_id = timed(lambda: bench.api.submit(plan))
    subtasks = [dict(item) for item in plan["subtasks"]]
    subtasks[len(subtasks) // 2]["input"] = {"result": "changed"}
    # The last subtask (none depends on it) gives way to another: one removed, one added, as many as before.
    subtasks[-1] = {**subtasks[-1], "key": "added", "description": "one more"}
    path = f"/plans/{plan_id}/"
    revised, response = timed(
        lambda: bench.api.request("PATCH", path, json={"subtasks": subtasks}, headers={"If-Match": '"1"'})
    )
    assert response.json()["revision"] == 2
    read, _ = timed(lambda: bench.api.request("GET", f"{path}revisions/"))
    bench.api.request("POST", f"{path}cancel/", json={"reason": "benchmark done"})
    result.add(f"s{count}_create_s", created, "s")
    result.add(f"s{count}_revise_s", revised, "s")
    result.add(f"s{count}_revisions_ms", read * 1000, "ms")
    print(
        f"  {count} subtasks: submitted in {created:.2f} s, revised in {revised:.2f} s, "
        f"revisions read in {read * 1000:.0f} ms",
        flush=True,
    )


def run(bench: Bench) -> Result:
    sizes = [bench.scaled(size, 10) for size in SIZES]
    result = scenario_result("revise", f"revising drafts of {' and '.join(map(str, sizes))} subtasks over HTTP")
    for _ in range(bench.repeat):
        for size in sizes:
            measure(bench, result, size)
        large = sizes[-1]
        result.add(
            "revise_over_create",
            result.figures[f"s{large}_revise_s"].samples[-1] / result.figures[f"s{large}_create_s"].samples[-1],
            "x",
        )
    return result
