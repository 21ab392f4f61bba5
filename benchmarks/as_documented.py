"""`as_documented`: the stack started exactly as docs/processes.md tells users, against a minimal raw Celery app.

Two `celery -A config worker --concurrency 1` (every queue), `celery -A config beat` and
`uvicorn config.asgi:application`, with nothing set but the database and broker URLs and the
secret key. The plan: 10 levels of 50 no-op subtasks, each depending on one or two of the level
before (`max_parallel` 64, so one chord per level), from its approval to `completed`; the
baseline: the same levels as one chord per level whose body sends the next, in
benchmarks/raw_celery.py (no Django, Redis results) on two worker processes of its own, on the
same Redis. Then tool-call approvals decided over HTTP one after another: from the approve
response to the resumed run's start (its `started_at`), against a raw apply_async to its task's
start.
"""

import os
import statistics
import time
from pathlib import Path

from celery import current_app
from django.conf import settings

from approvals.models import Approval
from benchmarks import raw_celery
from benchmarks.bench import Bench, engine_run, new_key, raw_dispatch, scenario_result, wait_stamps
from benchmarks.client import Api, wait_finished
from benchmarks.harness import broker, workers_answering
from benchmarks.raw_workers import KEPT, raw_worker
from benchmarks.raw_workers import wait_ready as wait_raw_ready
from benchmarks.report import Result
from benchmarks.shapes import layered_plan, no_ops
from plans.models import Subtask
from scripts.processes import WebServer, Worker, current_database_url

LEVELS, WIDTH, PROCESSES = 10, 50, 2
APPROVALS = 30


def documented_env() -> dict[str, str]:
    """Return what a user sets: the URLs and the secret key (and the shell's own variables)."""
    return {
        **{name: os.environ[name] for name in KEPT if name in os.environ},
        "DATABASE_URL": current_database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
    }


class Processes:
    """The documented stack and the raw app's workers, each started as its users start it."""

    def __init__(self, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        env = documented_env()
        self.workers = [
            *(
                Worker(f"doc{i}", ["worker", "--concurrency", "1", "--hostname", f"doc{i}@%h"], env, log_dir)
                for i in (1, 2)
            ),
            Worker("docbeat", ["beat", "--schedule", str(log_dir / "beat-schedule")], env, log_dir),
        ]
        self.raw = [raw_worker(f"raw{i}", 1, log_dir) for i in (1, 2)]
        self.web = WebServer(env, log_dir)

    def wait_ready(self, timeout: float = 90) -> None:
        self.web.wait_ready()
        served = [worker for worker in self.workers if worker.name != "docbeat"]
        workers_answering(current_app, served, what="documented processes", timeout=timeout)
        wait_raw_ready(self.raw, timeout)

    def stop(self) -> None:
        self.web.stop()
        for worker in [*self.workers, *self.raw]:
            worker.stop()


def raw_levels(sizes: list[int]) -> float:
    key = new_key("raw-app")
    start = time.time()
    raw_celery.send_levels(sizes=sizes, key=key)
    return wait_stamps(key, 1)[0] - start


def parked(api: Api, count: int) -> list[tuple[str, str, str]]:
    """Submit `count` plans whose one subtask asks for a tool call; return (plan, subtask, approval) once asked."""
    plan = {
        "goal": "benchmark: resume as documented",
        "requires_approval": False,
        "subtasks": [
            {"key": "ask", "description": "ask once", "agent": "script", "input": {"tool_calls": [{"tool": "probe"}]}}
        ],
    }
    plan_ids = [api.submit(plan) for _ in range(count)]
    deadline = time.monotonic() + 120
    while True:
        rows = list(
            Approval.objects.filter(plan_id__in=plan_ids, status="pending", kind="tool_call").values_list(
                "plan_id", "subtask_id", "pk"
            )
        )
        if len(rows) == count:
            return [(str(plan_id), str(subtask_id), str(pk)) for plan_id, subtask_id, pk in rows]
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(rows)} of {count} tool calls asked for approval")
        time.sleep(0.05)


def resumed_start(subtask_id: str, after: float, timeout: float = 60) -> float:
    """Wait until the subtask's resumed run has started; return when (its started_at, the database's clock)."""
    deadline = time.monotonic() + timeout
    while True:
        started = Subtask.objects.filter(pk=subtask_id).values_list("started_at", flat=True).first()
        if started is not None and started.timestamp() > after:
            return started.timestamp()
        if time.monotonic() > deadline:
            raise RuntimeError(f"subtask {subtask_id} did not resume")
        time.sleep(0.002)


def resume_rep(api: Api, count: int) -> tuple[list[float], list[float]]:
    engine, raw = [], []
    for plan_id, subtask_id, approval_id in parked(api, count):
        first = Subtask.objects.values_list("started_at", flat=True).get(pk=subtask_id)
        assert first is not None
        api.approve(approval_id)
        answered = time.time()
        engine.append((resumed_start(subtask_id, first.timestamp()) - answered) * 1000)
        wait_finished([plan_id], timeout=60, poll=0.005)
        raw.append(raw_dispatch() * 1000)
    return engine, raw


def run(bench: Bench) -> Result:
    width = bench.scaled(WIDTH, 2)
    count = bench.scaled(APPROVALS, 2)
    levels = no_ops(LEVELS, width)
    result = scenario_result(
        "as_documented",
        f"{LEVELS} levels x {width} no-op subtasks on 2 documented workers of 1 process, against a raw Celery app",
    )
    result.fact("processes", PROCESSES)
    result.fact("environment", sorted(name for name in documented_env() if name not in KEPT))
    bench.stop_stack()  # the documented workers consume every queue: nothing else may take their tasks
    bench.raw_workers.stop()  # nor the raw queue's tasks: the raw app's workers here are its own two
    broker().delete(raw_celery.QUEUE)
    processes = Processes(bench.log_dir / "as-documented")
    try:
        processes.wait_ready()
        api = Api.login(processes.web.url)
        try:
            engine_run(api, layered_plan(no_ops(3, 8), goal="benchmark: warm-up"))
            raw_levels([8, 8, 8])
            for rep in range(bench.repeat):
                engine = engine_run(api, layered_plan(levels, goal="benchmark: as documented"))
                time.sleep(0.5)
                raw = raw_levels([len(level) for level in levels])
                result.add("engine_s", engine, "s")
                result.add("raw_s", raw, "s")
                result.add("ratio", engine / raw, "x")
                resumed, dispatched = resume_rep(api, count)
                engine_p50, raw_p50 = statistics.median(resumed), statistics.median(dispatched)
                result.add("resume_p50_ms", engine_p50, "ms")
                result.add("raw_dispatch_p50_ms", raw_p50, "ms")
                result.add("resume_ratio", max(engine_p50, 0.0) / raw_p50, "x")
                print(
                    f"  rep {rep + 1}: engine {engine:.2f} s, raw app {raw:.2f} s: {engine / raw:.1f}x; "
                    f"approve response -> resumed start p50 {engine_p50:.1f} ms, raw apply_async -> start "
                    f"p50 {raw_p50:.1f} ms",
                    flush=True,
                )
        finally:
            api.close()
    finally:
        processes.stop()
    result.note("resume: a resumed run may start before the approve response arrives (the enqueue is on commit)")
    return result
