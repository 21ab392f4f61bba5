"""`health`: what probes cost. /health/ready/ called in a row, and approve POSTs while 50 clients call /health/.

The approvals are decided one after another, each waiting for its plan to finish, first with
nothing else going on, then while a separate process keeps 50 anonymous /health/ calls in flight;
both halves are measured in the same run, so the ratio shows what the flood adds to an approval.
"""

import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from benchmarks.bench import Bench, scenario_result
from benchmarks.client import Api, wait_finished
from benchmarks.report import ROOT, Result
from benchmarks.resume import park, percentile

READY_CALLS = 300
APPROVALS = 40
FLOODERS = 50


def ready_latencies(url: str, count: int) -> list[float]:
    """Return the milliseconds of `count` /health/ready/ calls made one after another."""
    latencies = []
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            began = time.perf_counter()
            response = client.get(f"{url}/health/ready/")
            latencies.append((time.perf_counter() - began) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"/health/ready/ answered {response.status_code}: {response.text[:300]}")
    return latencies


def approve_latencies(api: Api, waiting: list[tuple[str, str, str]]) -> list[float]:
    """Approve each parked plan's tool call, then wait for the plan; return the POSTs' milliseconds."""
    latencies = []
    for plan_id, approval_id, _ in waiting:
        began = time.perf_counter()
        api.approve(approval_id)
        latencies.append((time.perf_counter() - began) * 1000)
        wait_finished([plan_id], timeout=120, poll=0.01)
    return latencies


@contextmanager
def flooding(url: str, clients: int) -> Iterator[dict]:
    """Keep `clients` anonymous /health/ calls in flight from another process; yield its report once stopped."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.flood", f"{url}/health/", str(clients)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    report: dict = {}
    try:
        assert process.stdout is not None
        process.stdout.readline()  # "flooding": its clients are about to start
        time.sleep(1)  # their connections are open and the web is busy
        yield report
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
        report.update(json.loads(out.strip().splitlines()[-1]) if out.strip() else {})


def run(bench: Bench) -> Result:
    count = bench.scaled(APPROVALS, 2)
    result = scenario_result(
        "health", f"/health/ready/ in a row; {count} approvals, half of them under a /health/ flood"
    )
    for rep in range(bench.repeat):
        bench.stack.settle()
        ready = ready_latencies(bench.stack.url, bench.scaled(READY_CALLS, 20))
        waiting = park(bench.api, 2 * count)
        bench.stack.settle()
        quiet = approve_latencies(bench.api, waiting[:count])
        with flooding(bench.stack.url, FLOODERS) as flood:
            loaded = approve_latencies(bench.api, waiting[count:])
        rate = flood["calls"] / flood["seconds"] if flood.get("seconds") else 0.0
        result.add("ready_p50_ms", statistics.median(ready), "ms")
        result.add("ready_p95_ms", percentile(ready, 0.95), "ms")
        result.add("approve_p50_ms", statistics.median(quiet), "ms")
        result.add("approve_under_health_flood_p50_ms", statistics.median(loaded), "ms")
        result.add("flood_over_quiet", statistics.median(loaded) / statistics.median(quiet), "x")
        result.add("health_calls_per_s", rate, "/s")
        print(
            f"  rep {rep + 1}: /health/ready/ p50 {statistics.median(ready):.2f} ms; approve POST p50 "
            f"{statistics.median(quiet):.1f} ms quiet, {statistics.median(loaded):.1f} ms under {FLOODERS} "
            f"concurrent /health/ calls ({rate:.0f} answered a second, {flood.get('statuses')})",
            flush=True,
        )
    result.fact("flooders", FLOODERS)
    return result
