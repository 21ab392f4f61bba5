"""`health`: what probes cost. /health/ready/ called in a row, and approve POSTs with 50 /health/ calls at once.

The approvals are decided one after another, each waiting for its plan to finish: half alone,
half while another process sends 50 anonymous /health/ calls at the same moment as the POST.
Both halves are measured in the same run, so the ratio shows what the 50 calls add to an approval.
"""

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from benchmarks.bench import Bench, scenario_result
from benchmarks.client import Api, wait_finished
from benchmarks.report import ROOT, Result
from benchmarks.resume import park, percentile

READY_CALLS = 300
APPROVALS = 40
BURST = 50


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


class Burst:
    """Another process that sends `calls` /health/ calls at once each time it is fired."""

    def __init__(self, url: str, calls: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.flood", f"{url}/health/", str(calls)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.reports: list[dict] = []
        self._read()  # its connections are open

    def _read(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the /health/ burst process ended")
        return json.loads(line)

    def fire(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def wait(self) -> None:
        self.reports.append(self._read())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@contextmanager
def bursting(url: str, calls: int) -> Iterator[Burst]:
    burst = Burst(url, calls)
    try:
        yield burst
    finally:
        burst.close()


def cpu_seconds(pid: int) -> float:
    """Return the CPU time a process has used so far (user and system, all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def approve_latencies(api: Api, waiting: list[tuple[str, str, str]], burst: Burst | None = None) -> list[float]:
    """Approve each parked plan's tool call (with a burst of /health/ calls), then wait for the plan.

    Return the approve POSTs' milliseconds.
    """
    latencies = []
    for plan_id, approval_id, _ in waiting:
        if burst is not None:
            burst.fire()
        began = time.perf_counter()
        api.approve(approval_id)
        latencies.append((time.perf_counter() - began) * 1000)
        if burst is not None:
            burst.wait()
        wait_finished([plan_id], timeout=120, poll=0.01)
    return latencies


def run(bench: Bench) -> Result:
    count = bench.scaled(APPROVALS, 2)
    title = f"/health/ready/ in a row; {count} approvals alone, {count} with {BURST} /health/ calls at once"
    result = scenario_result("health", title)
    for rep in range(bench.repeat):
        bench.stack.settle()
        ready = ready_latencies(bench.stack.url, bench.scaled(READY_CALLS, 20))
        waiting = park(bench.api, 2 * count)
        bench.stack.settle()
        web = bench.stack.web
        assert web is not None
        cpu = cpu_seconds(web.process.pid)
        alone = approve_latencies(bench.api, waiting[:count])
        cpu_alone, cpu = cpu_seconds(web.process.pid) - cpu, cpu_seconds(web.process.pid)
        with bursting(bench.stack.url, BURST) as burst:
            loaded = approve_latencies(bench.api, waiting[count:], burst)
        cpu_loaded = cpu_seconds(web.process.pid) - cpu
        burst_cpu_ms = max(0.0, cpu_loaded - cpu_alone) * 1000 / count
        burst_ms = statistics.median(report["ms"] for report in burst.reports)
        statuses = sorted({status for report in burst.reports for status in report["statuses"]})
        result.add("ready_p50_ms", statistics.median(ready), "ms")
        result.add("ready_p95_ms", percentile(ready, 0.95), "ms")
        result.add("approve_p50_ms", statistics.median(alone), "ms")
        result.add("approve_with_health_burst_p50_ms", statistics.median(loaded), "ms")
        result.add("burst_over_alone", statistics.median(loaded) / statistics.median(alone), "x")
        result.add("burst_p50_ms", burst_ms, "ms")
        result.add("web_cpu_per_burst_ms", burst_cpu_ms, "ms")
        print(
            f"  rep {rep + 1}: /health/ready/ p50 {statistics.median(ready):.2f} ms; approve POST p50 "
            f"{statistics.median(alone):.1f} ms alone, {statistics.median(loaded):.1f} ms with {BURST} "
            f"/health/ calls at once (all answered in {burst_ms:.1f} ms, statuses {statuses}; the web "
            f"spent {burst_cpu_ms:.1f} ms of CPU on each burst)",
            flush=True,
        )
    result.fact("health_calls_per_approval", BURST)
    return result
