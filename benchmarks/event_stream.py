"""`stream`: live event stream latency, from an event's commit to its arrival at an SSE client (uvicorn)."""

import queue
import statistics
import threading
import time

import httpx
from django.db import transaction

from benchmarks.bench import Bench, scenario_result
from benchmarks.report import Result
from benchmarks.shapes import layered_plan, no_ops
from execution.events import event_append
from plans.models import Plan

SAMPLES = 100


def one_rep(bench: Bench, samples: int) -> list[float]:
    api = bench.api
    plan_id = api.submit(layered_plan(no_ops(1, 1), goal="benchmark: stream"))  # a draft: nothing runs
    after = Plan.objects.values_list("last_event_seq", flat=True).get(pk=plan_id)
    arrivals: queue.Queue[tuple[int, float]] = queue.Queue()
    stop = threading.Event()

    def listen() -> None:
        headers = {"Authorization": f"Token {api.token}", "Accept": "text/event-stream"}
        url = f"{api.base_url}/api/v1/plans/{plan_id}/events/?after={after}"
        with httpx.stream("GET", url, headers=headers, timeout=None) as response:
            for line in response.iter_lines():
                if line.startswith("id: "):
                    arrivals.put((int(line[4:]), time.perf_counter()))
                if stop.is_set():
                    return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    time.sleep(1.0)
    latencies = []
    for i in range(samples):
        with transaction.atomic():
            Plan.objects.select_for_update().get(pk=plan_id)  # events are numbered under the plan's lock
            seq = event_append(plan_id=plan_id, type="benchmark.ping", payload={"i": i})
        committed = time.perf_counter()
        arrived_seq, arrived = arrivals.get(timeout=10)
        assert arrived_seq == seq, (arrived_seq, seq)
        latencies.append((arrived - committed) * 1000)
        time.sleep(0.02)
    stop.set()
    with transaction.atomic():  # wake the stream once more so its thread sees the stop
        Plan.objects.select_for_update().get(pk=plan_id)
        event_append(plan_id=plan_id, type="benchmark.ping", payload={"i": samples})
    thread.join(timeout=5)
    return latencies


def run(bench: Bench) -> Result:
    samples = bench.scaled(SAMPLES, 5)
    result = scenario_result("stream", f"event stream: commit -> SSE client, {samples} events, uvicorn")
    for rep in range(bench.repeat):
        latencies = sorted(one_rep(bench, samples))
        result.add("p50_ms", statistics.median(latencies), "ms")
        result.add("p95_ms", latencies[max(0, round(len(latencies) * 0.95) - 1)], "ms")
        result.add("max_ms", latencies[-1], "ms")
        print(
            f"  rep {rep + 1}: p50 {result.figures['p50_ms'].samples[-1]:.1f} ms, "
            f"p95 {result.figures['p95_ms'].samples[-1]:.1f} ms, max {latencies[-1]:.1f} ms (goal: under 100 ms)",
            flush=True,
        )
    return result
