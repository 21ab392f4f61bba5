"""`large_plan`: a 10,000-subtask plan with 50,000 edges, created over HTTP and run, against 1,000.

Both plans have levels of 100 no-op subtasks, each depending on about 5 of the level before,
so the per-subtask cost of the two runs differs only if some per-subtask work grows with the
plan. Status and detail are read over HTTP at both sizes (latency) and in this process
through Django's test client (query counts).
"""

import statistics
import time

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from benchmarks.bench import Bench, scenario_result
from benchmarks.client import Api, wait_finished
from benchmarks.harness import reset_peak_rss, rss
from benchmarks.report import Result
from benchmarks.shapes import layered_plan, no_ops

LARGE, EDGES_PER_SUBTASK, WIDTH = 10_000, 5, 100
READS = {"status": 20, "detail": 5}


def read_latency(api: Api, path: str, times: int) -> float:
    timings = []
    for _ in range(times):
        began = time.perf_counter()
        api.request("GET", path)
        timings.append(time.perf_counter() - began)
    return statistics.median(timings) * 1000


def query_count(api: Api, path: str) -> int:
    """Count the queries a GET makes, in this process through Django's test client."""
    client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Token {api.token}")
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/api/v1{path}")
    assert response.status_code == 200, response.content[:500]
    return len(queries)


def measure(bench: Bench, result: Result, count: int, label: str) -> None:
    width = min(WIDTH, max(2, count // 10))
    plan = layered_plan(
        no_ops(count // width, width), goal=f"benchmark: {count} subtasks", edges=EDGES_PER_SUBTASK * count
    )
    edges = sum(len(subtask["depends_on"]) for subtask in plan["subtasks"])
    result.fact(f"{label}_shape", {"subtasks": count, "edges": edges, "levels": count // width, "width": width})
    web = bench.stack.web
    assert web is not None
    bench.stack.settle()
    reset_peak_rss(web.process.pid)
    rss_before = rss(web.process.pid)
    began = time.perf_counter()
    plan_id = bench.api.submit(plan)
    created = time.perf_counter() - began
    peak = rss(web.process.pid, "VmHWM")

    start = time.time()
    bench.api.approve_plan(plan_id)
    engine = wait_finished([plan_id], timeout=7200) - start
    bench.stack.settle()

    result.add(f"{label}_create_s", created, "s")
    result.add(f"{label}_create_web_peak_rss_mb", peak / 1e6, "MB")
    result.add(f"{label}_create_web_rss_growth_mb", (peak - rss_before) / 1e6, "MB")
    result.add(f"{label}_engine_s", engine, "s")
    result.add(f"{label}_per_subtask_ms", engine / count * 1000, "ms")
    reads = {}
    for name, path in (("status", f"/plans/{plan_id}/status/"), ("detail", f"/plans/{plan_id}/")):
        reads[name] = read_latency(bench.api, path, READS[name])
        result.add(f"{label}_{name}_ms", reads[name], "ms")
        result.fact(f"{label}_{name}_queries", query_count(bench.api, path))
    print(
        f"  {count} subtasks, {edges} edges: created in {created:.2f} s (web peak RSS {peak / 1e6:.0f} MB, "
        f"+{(peak - rss_before) / 1e6:.0f} MB); ran in {engine:.1f} s ({engine / count * 1000:.1f} ms per subtask); "
        f"status {reads['status']:.1f} ms, detail {reads['detail']:.0f} ms",
        flush=True,
    )


def run(bench: Bench) -> Result:
    large = bench.scaled(LARGE, 20)
    small = max(10, large // 10)
    result = scenario_result("large_plan", f"{large} against {small} subtasks ({EDGES_PER_SUBTASK} edges each)")
    for _ in range(bench.repeat):
        measure(bench, result, small, "small")
        measure(bench, result, large, "large")
        small_cost = result.figures["small_per_subtask_ms"].samples[-1]
        large_cost = result.figures["large_per_subtask_ms"].samples[-1]
        result.add("per_subtask_ratio", large_cost / small_cost, "x")
        small_detail = result.figures["small_detail_ms"].samples[-1]
        result.add("detail_ratio", result.figures["large_detail_ms"].samples[-1] / small_detail, "x")
    same = all(result.facts[f"small_{name}_queries"] == result.facts[f"large_{name}_queries"] for name in READS)
    result.fact("same_query_counts", same)
    return result
