"""The processes a benchmark measures (web, subtask and control workers, beat) and what watches them."""

import os
import re
import socket
import threading
import time
from pathlib import Path

import redis
from celery import Celery, current_app
from django.conf import settings
from django.db import connection
from kombu.exceptions import ChannelError

from scripts.processes import WebServer, Worker, current_database_url

SUBTASK_CONCURRENCY = 4
CONTROL_CONCURRENCY = 2
# overhead's in-app figure (raw_in_app_s) runs raw tasks in the very processes that run the engine.
INCLUDE = "benchmarks.tasks"
# The reconciler's repairs, one WARNING line each (execution/engine/reconciler.py).
REDROVE = {
    "lost_runs": re.compile(r"Reconciler: plan \S+: run \d+ of subtask .* was lost"),
    "resent": re.compile(r"Reconciler: plan \S+: re-sent subtask"),
    "advanced": re.compile(r"Reconciler: plan \S+ had nothing in flight: advanced it"),
}
# Higher than any scenario's request rate: the benchmark measures the engine, not the throttle.
THROTTLE = "100000000/minute"


def bench_env(*, result_backend: str) -> dict[str, str]:
    """Return the environment of every process of the stack: production settings otherwise."""
    return {
        **os.environ,
        "DATABASE_URL": current_database_url(),
        "CELERY_RESULT_BACKEND": result_backend,
        "EXECUTION_PYTHON_AGENT_MODULES": "benchmarks.agents:*",
        "API_THROTTLE_USER": THROTTLE,
        "API_THROTTLE_TOKEN": THROTTLE,
        # One benchmark user stands for many clients: it submits thousands of plans at once.
        "PLANS_MAX_ACTIVE_PER_USER": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


def workers_answering(app: Celery, workers: list[Worker], *, what: str, timeout: float = 60) -> None:
    """Wait until every one of these workers answers `app`'s ping; raise, with their logs' tails, if one dies first."""
    wanted = {worker.hostname for worker in workers}
    deadline = time.monotonic() + timeout
    while True:
        replies = app.control.ping(destination=list(wanted), timeout=0.5) or []
        if wanted <= {host for reply in replies for host in reply}:
            return
        dead = [worker.name for worker in workers if worker.process.poll() is not None]
        if dead or time.monotonic() > deadline:
            tails = "\n".join(f"--- {worker.name} ---\n{worker.tail()}" for worker in workers)
            raise RuntimeError(f"{what} did not start ({dead or 'timeout'}):\n{tails}")


class Stack:
    """uvicorn, a subtask worker, a control worker and beat, started as the Procfile starts them."""

    def __init__(
        self,
        *,
        result_backend: str,
        log_dir: Path,
        concurrency: int = SUBTASK_CONCURRENCY,
        env: dict[str, str] | None = None,
    ) -> None:
        self.result_backend = result_backend
        self.concurrency = concurrency
        self.env = {**bench_env(result_backend=result_backend), **(env or {})}
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.workers: dict[str, Worker] = {}
        self.web: WebServer | None = None
        self.control_log = self.log_dir / "bench-control.log"

    @property
    def url(self) -> str:
        assert self.web is not None
        return self.web.url

    def start(self) -> "Stack":
        current_app.control.purge()
        worker_env = self.env
        self._start_worker("subtasks", self.concurrency, worker_env)
        self._start_worker("control", CONTROL_CONCURRENCY, worker_env, queues="control,webhooks")
        schedule = str(self.log_dir / "beat-schedule")
        self.workers["beat"] = Worker(
            "beat", ["beat", "--loglevel", "WARNING", "--schedule", schedule], worker_env, self.log_dir
        )
        self.web = WebServer(self.env, self.log_dir, args=["--no-access-log"])
        self.web.wait_ready()
        self.wait_for_workers("subtasks", "control")
        return self

    def _start_worker(self, name: str, concurrency: int, env: dict[str, str], queues: str = "") -> None:
        args = [
            "worker",
            "--queues",
            queues or name,
            "--hostname",
            f"bench-{name}@%h",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--include",
            INCLUDE,
        ]
        self.workers[name] = Worker(f"bench-{name}", args, env, self.log_dir)

    def hostname(self, name: str) -> str:
        return f"bench-{name}@{socket.gethostname()}"

    def wait_for_workers(self, *names: str, timeout: float = 60) -> None:
        workers = [self.workers[name] for name in names]
        workers_answering(current_app, workers, what="benchmark workers", timeout=timeout)

    def restart_subtasks(self, concurrency: int) -> None:
        """Replace the subtask worker by one with this many processes (the queue waits meanwhile)."""
        self.workers["subtasks"].stop()
        self.concurrency = concurrency
        self._start_worker("subtasks", concurrency, self.env)
        self.wait_for_workers("subtasks")

    def stop(self) -> None:
        if self.web is not None:
            self.web.stop()
            self.web = None
        for worker in self.workers.values():
            worker.stop()
        self.workers.clear()

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{worker.tail()}" for name, worker in self.workers.items())

    # --- What the scenarios read --------------------------------------------------------

    def control_log_size(self) -> int:
        return self.control_log.stat().st_size if self.control_log.exists() else 0

    def reconciler_lines(self, since: int = 0) -> list[dict[str, int]]:
        """Return one report per repair line the reconciler logged after offset `since`."""
        if not self.control_log.exists():
            return []
        with self.control_log.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        return [{kind: 1} for line in text.splitlines() for kind, pattern in REDROVE.items() if pattern.search(line)]

    def busy_slots(self) -> dict[str, int]:
        """Return how many tasks each worker runs now (`celery inspect active`)."""
        hosts = [self.hostname("subtasks"), self.hostname("control")]
        active = current_app.control.inspect(destination=hosts, timeout=2).active() or {}
        missing = set(hosts) - set(active)
        if missing:
            raise RuntimeError(f"no answer from {sorted(missing)} to inspect active")
        return {host.split("@")[0].removeprefix("bench-"): len(tasks) for host, tasks in active.items()}

    def worker_rss(self) -> dict[str, int]:
        """Return the resident memory of each worker: its main process and its pool processes."""
        return {name: tree_rss(self.workers[name].pid) for name in ("subtasks", "control")}

    def cpu_seconds(self) -> dict[str, float]:
        """Return the CPU time the web, each worker, PostgreSQL and Redis have used so far (processes and children).

        PostgreSQL's is its postmaster's tree, found from this process's connection, and Redis's
        the broker's server process (INFO's process_id): 0 when they run on another host (or as
        a user whose processes this one cannot read).
        """
        assert self.web is not None
        used = {name: tree_cpu_s(self.workers[name].pid) for name in ("subtasks", "control")}
        used["web"] = tree_cpu_s(self.web.process.pid)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (backend,) = cursor.fetchone()
        postmaster = parent_pid(backend)
        used["postgres"] = tree_cpu_s(postmaster) if postmaster else 0.0
        server = redis_server_pid()
        used["redis"] = tree_cpu_s(server) if server else 0.0
        return used

    def settle(self, timeout: float = 120) -> None:
        """Wait until nothing is queued or running (twice in a row), so measurements do not overlap.

        Plans waiting for a human count as settled: they hold nothing.
        """
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not settle within {timeout:.0f}s:\n{self.logs()}")
            queued = queued_messages("subtasks", "control")
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM plans_subtask WHERE status IN ('queued', 'running')")
                (busy,) = cursor.fetchone()
            quiet = quiet + 1 if not queued and not busy else 0
            time.sleep(0.15)


def queued_messages(*queues: str) -> int:
    """Return how many messages wait in these queues (on Redis, in all of each queue's priority lists)."""
    total = 0
    with current_app.connection_for_read() as conn:
        for queue in queues:
            try:
                total += conn.default_channel.queue_declare(queue=queue, passive=True).message_count  # type: ignore[attr-defined]
            except ChannelError:  # Redis drops an empty list's key: the queue "does not exist"
                continue
    return total


def broker() -> redis.Redis:
    """Return a client of the broker's Redis, where the raw tasks and the probes leave their marks."""
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def redis_server_pid() -> int:
    """Return the process id of the broker's Redis server when it runs on this machine; 0 else."""
    try:
        pid = int(broker().info("server")["process_id"])
        name = Path(f"/proc/{pid}/comm").read_text()
    except (redis.RedisError, KeyError, ValueError, OSError):
        return 0
    return pid if "redis" in name or "valkey" in name else 0


def rss(pid: int, field: str = "VmRSS") -> int:
    """Return a process's resident memory (or its peak, VmHWM) in bytes; 0 once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def reset_peak_rss(pid: int) -> None:
    """Start a new peak (VmHWM) for this process (Linux: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _stat(pid: int) -> list[str]:
    """Return the fields of /proc/<pid>/stat after the command's name (field 3 first); [] once it has gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []


def parent_pid(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[1]) if fields else 0


def _tree(pid: int) -> list[int]:
    """Return a process and all its descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_rss(pid: int) -> int:
    return sum(rss(current) for current in _tree(pid))


def tree_cpu_s(pid: int) -> float:
    """Return the CPU time (user and system) of a process tree: its live processes and the children they reaped."""
    ticks = 0
    for current in _tree(pid):
        fields = _stat(current)
        if fields:
            ticks += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class RedisWatch:
    """Sample the broker's memory and count the bytes written to it while a run lasts."""

    def __init__(self) -> None:
        self.client = broker()
        self.peak_memory = 0
        self._stop = threading.Event()

    def __enter__(self) -> "RedisWatch":
        self.input_before = self.client.info("stats")["total_net_input_bytes"]
        self.memory_before = self.client.info("memory")["used_memory"]
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_memory = max(self.peak_memory, self.client.info("memory")["used_memory"])
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.bytes_written = self.client.info("stats")["total_net_input_bytes"] - self.input_before
        self.peak_growth = max(0, self.peak_memory - self.memory_before)


def megabytes(count: float) -> str:
    return f"{count / 1_000_000:.1f} MB"
