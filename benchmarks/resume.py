"""`resume`: approvals decided over HTTP one after another, until the resumed run starts on a worker.

Each plan has one subtask whose python agent (benchmarks.agents.ask_once) stamps every run's
start in Redis and asks for one tool call on its first run. The latency is from the approve
response to the resumed run's stamp; the baseline is a raw task's apply_async to its own
stamp in the minimal Celery app (benchmarks/raw_celery.py, on a worker of its own with as
many processes as the engine's workers), and the approve POST is set against a trivial
authenticated GET, all in the same run.
"""

import statistics
import time
from uuid import uuid4

from approvals.models import Approval
from benchmarks.bench import Bench, new_key, scenario_result, wait_stamps
from benchmarks.client import Api, in_threads, wait_finished
from benchmarks.report import Result

APPROVALS = 100


def probe_plan(probe: str) -> dict:
    return {
        "goal": "benchmark: resume",
        "requires_approval": False,
        "subtasks": [
            {
                "key": "ask",
                "description": "ask for one tool call",
                "agent": "python",
                "input": {"callable": "benchmarks.agents.ask_once", "probe": probe},
            }
        ],
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def park(api: Api, count: int) -> list[tuple[str, str, str]]:
    """Submit `count` plans and wait until each waits for its approval; return (plan, approval, probe)."""
    probes = [new_key(f"probe-{uuid4().hex[:8]}") for _ in range(count)]
    plan_ids = in_threads(api, probes, lambda client, probe: client.submit(probe_plan(probe)))
    for probe in probes:
        wait_stamps(probe, 1, timeout=120)
    deadline = time.monotonic() + 60
    while True:
        pending = {
            str(plan_id): str(pk)
            for plan_id, pk in Approval.objects.filter(
                plan_id__in=plan_ids, status="pending", kind="tool_call"
            ).values_list("plan_id", "pk")
        }
        if len(pending) == count:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(pending)} of {count} approvals were requested")
        time.sleep(0.05)
    return [(plan_id, pending[plan_id], probe) for plan_id, probe in zip(plan_ids, probes, strict=True)]


def one_rep(bench: Bench, count: int) -> dict[str, list[float]]:
    api = bench.api
    bench.raw_app()
    waiting = park(api, count)
    bench.stack.settle()
    figures: dict[str, list[float]] = {"engine": [], "raw": [], "approve": [], "get": []}
    for plan_id, approval_id, probe in waiting:
        began = time.perf_counter()
        api.request("GET", "/agents/")
        figures["get"].append(time.perf_counter() - began)

        began = time.perf_counter()
        api.approve(approval_id)
        answered = time.time()
        figures["approve"].append(time.perf_counter() - began)
        figures["engine"].append(wait_stamps(probe, 2, timeout=60)[1] - answered)
        wait_finished([plan_id], timeout=60, poll=0.005)

        figures["raw"].append(bench.raw_dispatch())
    return {name: [value * 1000 for value in values] for name, values in figures.items()}


def run(bench: Bench) -> Result:
    count = bench.scaled(APPROVALS, 2)
    result = scenario_result("resume", f"{count} tool-call approvals decided over HTTP, one after another")
    samples: dict[str, list[float]] = {"engine": [], "raw": []}
    for rep in range(bench.repeat):
        bench.stack.settle()
        figures = one_rep(bench, count)
        samples["engine"] += figures["engine"]
        samples["raw"] += figures["raw"]
        engine_p50, raw_p50 = statistics.median(figures["engine"]), statistics.median(figures["raw"])
        approve_p50, get_p50 = statistics.median(figures["approve"]), statistics.median(figures["get"])
        result.add("engine_p50_ms", engine_p50, "ms")
        result.add("engine_p99_ms", percentile(figures["engine"], 0.99), "ms")
        result.add("raw_dispatch_p50_ms", raw_p50, "ms")
        result.add("ratio", engine_p50 / raw_p50, "x")
        result.add("approve_request_p50_ms", approve_p50, "ms")
        result.add("trivial_get_p50_ms", get_p50, "ms")
        result.add("approve_over_get", approve_p50 / get_p50, "x")
        print(
            f"  rep {rep + 1}: approve response -> resumed start p50 {engine_p50:.1f} ms "
            f"(p99 {percentile(figures['engine'], 0.99):.1f}), raw apply_async -> start p50 {raw_p50:.1f} ms; "
            f"approve POST p50 {approve_p50:.1f} ms, GET /agents/ p50 {get_p50:.1f} ms",
            flush=True,
        )
    result.fact("approvals", count)
    result.fact("all_samples_p50_ms", {name: statistics.median(values) for name, values in samples.items()})
    if min(samples["engine"]) < 0:
        result.note("some resumed runs started before the approve response arrived (the enqueue is on commit)")
    return result
