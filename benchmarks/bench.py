"""What every scenario gets: the sizes (scaled), the repetitions, the running stack and an API client."""

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from benchmarks import raw_celery, tasks
from benchmarks.client import Api, wait_finished
from benchmarks.harness import CONTROL_CONCURRENCY, Stack, broker
from benchmarks.raw_workers import RawWorkers
from benchmarks.report import Result
from benchmarks.shapes import Levels, layered_plan, no_ops


class Bench:
    """One benchmark run: BENCH_SCALE scales every size, BENCH_REPEAT sets the repetitions.

    The raw baselines run in the minimal Celery app's worker (`raw_app`), as many processes as the
    shared stack's workers have together.
    """

    def __init__(self, *, log_dir: Path) -> None:
        self.log_dir = log_dir
        shutil.rmtree(log_dir, ignore_errors=True)
        self.scale = float(os.environ.get("BENCH_SCALE") or 1.0)
        self.repeat = int(os.environ.get("BENCH_REPEAT") or 3)
        self.result_backend = settings.CELERY_RESULT_BACKEND
        self.stacks: list[Stack] = []
        self._stack: Stack | None = None
        self._api: Api | None = None
        self.raw_workers = RawWorkers(log_dir / "raw")

    def scaled(self, count: int, minimum: int = 1) -> int:
        return max(minimum, round(count * self.scale))

    @property
    def stack(self) -> Stack:
        """Return the shared stack (Redis result backend), starting it on first use."""
        if self._stack is None:
            self._stack = self.start_stack(result_backend=self.result_backend)
        return self._stack

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = Api.login(self.stack.url)
        return self._api

    def start_stack(self, *, result_backend: str, env: dict[str, str] | None = None) -> Stack:
        """Start a stack and warm it up: the first runs after a start pay for imports and connections."""
        log_dir = self.log_dir / f"stack-{len(self.stacks) + 1}"
        stack = Stack(result_backend=result_backend, log_dir=log_dir, env=env)
        self.stacks.append(stack)
        try:
            stack.start()
            api = Api.login(stack.url)
            try:
                engine_run(api, layered_plan(no_ops(3, 8), goal="benchmark: warm-up"))
                # An in-app chord's counter lives in the sender's result backend: this process's.
                if result_backend == self.result_backend:
                    raw_in_app_run(no_ops(3, 8))
            finally:
                api.close()
            stack.settle()
        except BaseException:
            stack.stop()
            raise
        return stack

    def raw_app(self, processes: int | None = None) -> int:
        """Make sure the raw worker runs with `processes` (by default as many as the shared stack's subtask
        and control workers together); return how many.

        A fresh worker is warmed up first: its pool processes import and connect on their first tasks.
        """
        processes = processes or self.stack.concurrency + CONTROL_CONCURRENCY
        if self.raw_workers.run(processes):
            raw_run(no_ops(3, 8))
        return processes

    def raw_run(self, batches: Levels, *, processes: int | None = None) -> float:
        """Return the seconds the minimal app takes to run these batches as one chord each, in sequence."""
        self.raw_app(processes)
        return raw_run(batches)

    def raw_dispatch(self) -> float:
        """Return the seconds from one raw apply_async to its task's start, in the minimal app."""
        self.raw_app()
        return raw_dispatch()

    def stop_stack(self) -> None:
        """Stop the shared stack (a scenario that brings its own workers needs the queues to itself)."""
        if self._api is not None:
            self._api.close()
            self._api = None
        if self._stack is not None:
            self._stack.stop()
            self._stack = None

    @contextmanager
    def own_stack(self, *, result_backend: str, env: dict[str, str] | None = None) -> Iterator[tuple[Stack, Api]]:
        """Run a stack of its own (another result backend, more environment) instead of the shared one."""
        self.stop_stack()
        stack = self.start_stack(result_backend=result_backend, env=env)
        try:
            api = Api.login(stack.url)
            try:
                yield stack, api
            finally:
                api.close()
        finally:
            stack.stop()

    @contextmanager
    def shared_env(self, env: dict[str, str]) -> Iterator[None]:
        """Run the shared stack with more environment meanwhile (a scenario measuring what a setting costs)."""
        self.stop_stack()
        self._stack = self.start_stack(result_backend=self.result_backend, env=env)
        try:
            yield
        finally:
            self.stop_stack()

    def settle(self) -> None:
        """Let the shared stack, if it runs, finish what a scenario left in flight (or say it did not)."""
        if self._stack is not None:
            try:
                self._stack.settle(timeout=120)
            except RuntimeError as error:
                print(f"  {str(error).splitlines()[0]}", flush=True)

    def close(self) -> None:
        """Stop every stack and raw worker this run started, whatever state a failure left it in."""
        self.raw_workers.stop()
        self.stop_stack()
        for stack in self.stacks:
            stack.stop()

    # --- The reconciler check ---------------------------------------------------------------

    def mark(self) -> dict[str, Any]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT coalesce(max(id), 0) FROM execution_event")
            (last_event,) = cursor.fetchone()
        return {"event": last_event, "logs": {id(stack): stack.control_log_size() for stack in self.stacks}}

    def redrives_since(self, mark: dict[str, Any]) -> dict[str, int]:
        """Count what the reconciler re-drove since `mark`: resent events and its log lines' reports."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM execution_event WHERE id > %s AND type = 'subtask.resent'", [mark["event"]]
            )
            (resent_events,) = cursor.fetchone()
        counts = {"resent_events": resent_events, "log_lines": 0, "lost_runs": 0, "resent": 0, "advanced": 0}
        for stack in self.stacks:
            for report in stack.reconciler_lines(mark["logs"].get(id(stack), 0)):
                counts["log_lines"] += 1
                for key, value in report.items():
                    counts[key] = counts.get(key, 0) + value
        return counts


def engine_run(api: Api, plan: dict) -> float:
    """Submit a plan as a draft, then return the seconds from its approval to its completion."""
    plan_id = api.submit(plan)
    start = time.time()
    api.approve_plan(plan_id)
    return wait_finished([plan_id]) - start


def raw_run(batches: Levels) -> float:
    """Return the seconds the minimal app's running workers take to run these batches as one chord each."""
    key = new_key("raw")
    start = time.time()
    raw_celery.send_batches(batches=batches, key=key)
    return wait_stamps(key, 1)[0] - start


def raw_dispatch() -> float:
    """Return the seconds from one apply_async of the minimal app to its task's start on its running workers."""
    key = new_key("raw-dispatch")
    sent = time.time()
    raw_celery.send_stamp(key=key)
    return wait_stamps(key, 1, timeout=60)[0] - sent


def raw_in_app_run(batches: Levels) -> float:
    """Return the seconds the same batches take as raw tasks inside the engine's own workers (benchmarks.tasks)."""
    key = new_key("raw-in-app")
    start = time.time()
    tasks.send_batches(batches=batches, key=key)
    return wait_stamps(key, 1)[0] - start


def new_key(prefix: str) -> str:
    """Return a fresh Redis key for stamps, and make sure nothing is left under it."""
    key = f"bench:{prefix}:{time.time_ns()}"
    broker().delete(key)
    return key


def wait_stamps(key: str, count: int, timeout: float = 300) -> list[float]:
    """Wait until `count` stamps are under `key`; return them in order."""
    client = broker()
    deadline = time.monotonic() + timeout
    while client.llen(key) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {client.llen(key)} of {count} raw tasks ran within {timeout:.0f}s")
        time.sleep(0.01)
    return [float(value) for value in client.lrange(key, 0, -1)]


def scenario_result(name: str, title: str) -> Result:
    print(f"{name}: {title}", flush=True)
    return Result(name, title)
