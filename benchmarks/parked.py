"""`parked`: many plans waiting for a human hold no worker; then all are approved at once.

1,000 plans each wait on a tool-call approval: `celery inspect active` must show no busy
slot, and the workers' memory should not grow with them. Then 8 client threads approve all
of them over HTTP: the time until every plan has completed, against 1,000 raw dispatches
sent by 8 threads to the same queue, and the CPU time each decision costs the web, the
workers, PostgreSQL, Redis and the benchmark's own client threads (what the machine's cores
spend, until every plan has completed).
"""

import time
from concurrent.futures import ThreadPoolExecutor

from approvals.models import Approval
from benchmarks import raw_celery
from benchmarks.bench import Bench, new_key, scenario_result, wait_stamps
from benchmarks.client import Api, in_threads, wait_finished
from benchmarks.harness import megabytes
from benchmarks.report import Result

PLANS = 1000
THREADS = 8
PLAN = {
    "goal": "benchmark: parked",
    "requires_approval": False,
    "subtasks": [
        {
            "key": "ask",
            "description": "ask for one tool call",
            "agent": "script",
            "input": {"tool_calls": [{"tool": "bench.tool", "arguments": {}}]},
        }
    ],
}


def wait_pending(plan_ids: list[str], timeout: float = 600) -> list[str]:
    """Wait until every plan waits for its tool-call approval; return the approvals' ids."""
    deadline = time.monotonic() + timeout
    while True:
        pending = list(
            Approval.objects.filter(plan_id__in=plan_ids, status="pending", kind="tool_call").values_list(
                "pk", flat=True
            )
        )
        if len(pending) == len(plan_ids):
            return [str(pk) for pk in pending]
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(pending)} of {len(plan_ids)} plans asked for their approval")
        time.sleep(0.2)


def raw_dispatches(bench: Bench, count: int) -> float:
    bench.raw_app()
    key = new_key("parked-raw")
    start = time.time()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda _: raw_celery.send_stamp(key=key), range(count)))
    return max(wait_stamps(key, count)) - start


def busy_run_slots(bench: Bench, samples: int = 3) -> tuple[int, dict[str, int]]:
    """Return the most subtask runs seen active over a few samples, and the last sample per worker."""
    most, last = 0, {}
    for _ in range(samples):
        last = bench.stack.busy_slots()
        most = max(most, last.get("subtasks", 0))
        time.sleep(0.3)
    return most, last


def run(bench: Bench) -> Result:
    count = bench.scaled(PLANS, 2)
    result = scenario_result(
        "parked", f"{count} plans waiting on a tool-call approval, then approved by {THREADS} threads"
    )
    for rep in range(bench.repeat):
        bench.stack.settle()
        rss_before = bench.stack.worker_rss()
        began = time.time()
        plan_ids = in_threads(bench.api, [PLAN] * count, Api.submit, threads=THREADS)
        approval_ids = wait_pending(plan_ids)
        park_s = time.time() - began
        bench.stack.settle()
        busy, slots = busy_run_slots(bench)
        rss_after = bench.stack.worker_rss()

        cpu_before = {**bench.stack.cpu_seconds(), "clients": time.process_time()}
        start = time.time()
        in_threads(bench.api, approval_ids, Api.approve, threads=THREADS)
        requests_s = time.time() - start
        engine = wait_finished(plan_ids) - start
        bench.stack.settle()
        # The clients' share: this process, the 8 threads approving and the main one waiting for the plans.
        used_now = {**bench.stack.cpu_seconds(), "clients": time.process_time()}
        cpu = {name: (used - cpu_before[name]) * 1000 / count for name, used in used_now.items()}
        raw = raw_dispatches(bench, count)

        result.add("busy_slots", busy, "slots")
        result.add("park_s", park_s, "s")
        for name in ("subtasks", "control"):
            result.add(f"{name}_worker_rss_before_mb", rss_before[name] / 1e6, "MB")
            result.add(f"{name}_worker_rss_after_mb", rss_after[name] / 1e6, "MB")
        for name, ms in cpu.items():
            result.add(f"cpu_ms_per_decision_{name}", ms, "ms")
        result.add("approve_requests_s", requests_s, "s")
        result.add("engine_s", engine, "s")
        result.add("raw_s", raw, "s")
        result.add("ratio", engine / raw, "x")
        result.add("decisions_ratio", engine / raw, "x")  # the name for the same ratio
        print(
            f"  rep {rep + 1}: {count} parked in {park_s:.1f} s; busy slots {busy} (last sample {slots}); worker RSS "
            f"{megabytes(sum(rss_before.values()))} -> {megabytes(sum(rss_after.values()))}; all approved "
            f"{requests_s:.1f} s, completed {engine:.1f} s after the first approval; raw {raw:.2f} s; CPU per "
            f"decision (ms) {', '.join(f'{name} {ms:.1f}' for name, ms in cpu.items())}",
            flush=True,
        )
    result.fact("plans", count)
    result.fact("threads", THREADS)
    return result
