"""`sse`: 500 clients streaming one plan's events through the web processes `scripts/web.sh` starts.

The web runs as `make run`, the Docker image and Compose run it: `scripts/web.sh`, uvicorn with
WEB_CONCURRENCY processes (one per core unless set), with `CACHE_URL` pointing at Redis as
docs/processes.md recommends for several web processes (the stream places are then counted
once for all of them). The streams keep the default EVENT_STREAMS_PER_USER (10): the clients are
the plan's owner and approvers (staff with `approvals.decide_approval`, who see every plan),
ten streams each, as a team watching one plan would be.

The clients run in a process of their own (benchmarks/sse_clients.py, one event loop). Once
all are streaming, the benchmark commits events to the plan one after another, as the engine
does (the plan's row locked, `event_append`), and measures for each the time from its commit to
the moment the last client read it. Meanwhile it samples the PostgreSQL connections of the web
processes: the backends whose client port belongs to a TCP socket the web processes hold
(their LISTEN connection and the short-lived reads), which must not grow with the streams.
"""

import json
import math
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.db import connection, transaction
from rest_framework.authtoken.models import Token

from benchmarks.bench import Bench, scenario_result
from benchmarks.client import Api
from benchmarks.harness import bench_env, rss
from benchmarks.report import ROOT, Result
from benchmarks.shapes import layered_plan, no_ops
from execution.events import event_append
from plans.models import Plan
from scripts.processes import WebServer
from scripts.servers import free_port

CLIENTS = 500
EVENTS = 100
# Handshakes in flight at once while the clients connect: all of them, as after a web restart
# (each web process works on WEB_MAX_CONCURRENT_REQUESTS at once and queues the others).
CONNECTING = CLIENTS
# Between two events: each is measured on its own.
GAP_S = 0.05
SAMPLE_S = 0.2
WATCHERS_GROUP = "benchmark-sse-watchers"
# The web as make run, the Docker image and Compose start it.
WEB_SCRIPT = ROOT / "scripts" / "web.sh"


class ScriptWebServer(WebServer):
    """The web as `scripts/web.sh` starts it: uvicorn with WEB_CONCURRENCY processes (one per core)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / "web-sse.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                ["sh", str(WEB_SCRIPT), "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def serving(self) -> list[int]:
        """Return the processes that serve requests: uvicorn's workers (itself when it runs alone)."""
        children = [pid for pid, parent in parents().items() if parent == self.process.pid and not helper(pid)]
        return sorted(children) or [self.process.pid]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def parents() -> dict[int, int]:
    """Return every process's parent."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            found[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return found


def helper(pid: int) -> bool:
    """Return whether a child is multiprocessing's resource tracker rather than a web worker."""
    try:
        return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return True


def tcp_sockets(pids: list[int]) -> list[tuple[int, int, int]]:
    """Return (pid, local port, remote port) for each TCP socket these processes hold."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except FileNotFoundError:
                    continue
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except FileNotFoundError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            holder = inodes.get(fields[9])
            if holder is not None:
                found.append((holder, int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)))
    return found


def web_db_connections(pids: list[int]) -> int:
    """Return how many PostgreSQL backends serve these processes (matched by the client's port)."""
    db_port = int(connection.get_connection_params().get("port") or 5432)
    ports = {local for _, local, remote in tcp_sockets(pids) if remote == db_port}
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT client_port FROM pg_stat_activity WHERE client_port IS NOT NULL")
        return sum(1 for (port,) in cursor.fetchall() if port in ports)


def streams_per_process(web: ScriptWebServer) -> list[int]:
    """Return how many client connections each web process holds."""
    pids = web.serving()
    held = dict.fromkeys(pids, 0)
    for pid, local, remote in tcp_sockets(pids):
        if local == web.port and remote:
            held[pid] += 1
    return [held[pid] for pid in pids]


class ConnectionWatch:
    """Sample the web processes' database connections in a thread: the most seen per phase."""

    def __init__(self, web: ScriptWebServer) -> None:
        self.web = web
        self.phase = "idle"
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "ConnectionWatch":
        self._thread.start()
        return self

    def _sample(self) -> None:
        try:
            while not self._stop.is_set():
                count = web_db_connections(self.web.serving())
                self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), count)
                self._stop.wait(SAMPLE_S)
        finally:
            connection.close()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def watchers(count: int) -> list[str]:
    """Make `count` approvers (staff who may decide any approval, so see every plan); return their tokens."""
    group, _ = Group.objects.get_or_create(name=WATCHERS_GROUP)
    group.permissions.add(Permission.objects.get(codename="decide_approval", content_type__app_label="approvals"))
    stamp = time.time_ns()
    users = User.objects.bulk_create(
        [User(username=f"bench-sse-{stamp}-{index}", is_staff=True) for index in range(count)]
    )
    group.user_set.add(*users)
    # What `manage.py drf_create_token` does: no password check per user.
    return [Token.objects.create(user=user).key for user in users]


class Clients:
    """The client process: its JSON lines read by a thread."""

    def __init__(self, url: str, tokens: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.sse_clients"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"url": url, "tokens": tokens, "connecting": CONNECTING}) + "\n")
        self.process.stdin.flush()

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self.lines.put(json.loads(line))

    def next(self, timeout: float) -> dict[str, Any]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"no word from the SSE clients within {timeout:.0f}s") from None

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def commit_event(plan_id: str, index: int) -> tuple[int, float]:
    """Append an event to the plan as the engine does; return its seq and when its commit returned."""
    with transaction.atomic():
        Plan.objects.select_for_update().get(pk=plan_id)  # events are numbered under the plan's lock
        seq = event_append(plan_id=plan_id, type="benchmark.ping", payload={"i": index})
    assert seq is not None
    return seq, time.monotonic()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * fraction) - 1)]


def web_rss_mb(web: ScriptWebServer) -> float:
    return sum(rss(pid) for pid in web.serving()) / 1_000_000


def web_threads(web: ScriptWebServer) -> int:
    """Return the threads of the web processes (a synchronous view's request keeps one while it streams)."""
    total = 0
    for pid in web.serving():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Threads:"))
    return total


def one_rep(web: ScriptWebServer, clients: int, events: int, result: Result) -> dict[str, Any]:
    per_user = settings.EVENT_STREAMS_PER_USER
    users = math.ceil(clients / per_user)
    owner = Api.login(web.url)
    tokens = [owner.token, *watchers(users - 1)]
    try:
        plan_id = owner.submit(layered_plan(no_ops(1, 1), goal="benchmark: sse"))  # a draft: nothing runs
        after = Plan.objects.values_list("last_event_seq", flat=True).get(pk=plan_id)
        for token in tokens[:20]:  # new connections: every web process serves a request and reads the database
            warm = Api(web.url, token)
            warm.request("GET", f"/plans/{plan_id}/events/")
            warm.close()
    finally:
        owner.close()
    rss_before, threads_before = web_rss_mb(web), web_threads(web)
    url = f"{web.url}/api/v1/plans/{plan_id}/events/?after={after}"
    with ConnectionWatch(web) as watch:
        watch.phase = "connecting"
        began = time.monotonic()
        reader = Clients(url, [tokens[index // per_user] for index in range(clients)])
        try:
            ready = reader.next(timeout=600)
            connect_s = time.monotonic() - began
            if ready["refused"] or ready["ready"] != clients:
                raise RuntimeError(f"{ready['ready']} of {clients} streams opened; refused: {ready['refused']}")
            time.sleep(1.0)  # the last streams' first reads (after their `retry:`) count as connecting
            watch.phase = "open"
            held = streams_per_process(web)
            last: list[float] = []
            median: list[float] = []
            for index in range(events):
                seq, committed = commit_event(plan_id, index)
                line = reader.next(timeout=60)
                if line["seq"] != seq:
                    raise RuntimeError(f"expected event {seq} at every client, got {line}")
                last.append((line["last"] - committed) * 1000)
                median.append((line["median"] - committed) * 1000)
                time.sleep(GAP_S)
            rss_open, threads_open = web_rss_mb(web), web_threads(web)
            time.sleep(2 * SAMPLE_S)
        finally:
            reader.close()
    result.add("p50_ms", statistics.median(last), "ms")
    result.add("p99_ms", percentile(last, 0.99), "ms")
    result.add("max_ms", max(last), "ms")
    result.add("median_client_p50_ms", statistics.median(median), "ms")
    result.add("web_db_connections", watch.peaks.get("open", 0))
    result.add("web_db_connections_connecting", watch.peaks.get("connecting", 0))
    result.add("web_rss_before_mb", rss_before, "MB")
    result.add("web_rss_streams_mb", rss_open, "MB")
    result.add("web_threads_before", threads_before)
    result.add("web_threads_streams", threads_open)
    result.add("connect_s", connect_s, "s")
    return {"streams_per_process": held, "users": users}


def run(bench: Bench) -> Result:
    clients = bench.scaled(CLIENTS, 2)
    events = bench.scaled(EVENTS, 5)
    result = scenario_result("sse", f"{clients} SSE clients of one plan, {events} events, web as scripts/web.sh")
    broker, _, db = settings.CELERY_BROKER_URL.rpartition("/")
    cache_url = f"{broker}/{int(db) + 2}" if db.isdigit() else settings.CELERY_BROKER_URL
    log_dir = bench.log_dir / "sse"
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "metrics").mkdir(exist_ok=True)
    env = {
        **bench_env(result_backend=bench.result_backend),
        "CACHE_URL": cache_url,
        "PROMETHEUS_MULTIPROC_DIR": str(log_dir / "metrics"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    web = ScriptWebServer(env, log_dir)
    try:
        web.wait_ready()
        result.fact("streams_per_user", settings.EVENT_STREAMS_PER_USER)
        for rep in range(bench.repeat):
            facts = one_rep(web, clients, events, result)
            # Counted once they have served: the workers start after the port is bound.
            processes = len(web.serving())
            result.fact("web_processes", processes)
            result.fact("users", facts["users"])
            result.fact("streams_per_process", facts["streams_per_process"])
            figures = {key: figure.samples[-1] for key, figure in result.figures.items()}
            print(
                f"  rep {rep + 1}: commit -> all {clients} clients p50 {figures['p50_ms']:.1f} ms, "
                f"p99 {figures['p99_ms']:.1f} ms (goal <= 1000); web database connections "
                f"{figures['web_db_connections']:.0f} with the streams open, "
                f"{figures['web_db_connections_connecting']:.0f} while they connected "
                f"(goal <= {processes} processes + 2); web RSS {figures['web_rss_before_mb']:.0f} -> "
                f"{figures['web_rss_streams_mb']:.0f} MB; streams per process {facts['streams_per_process']}",
                flush=True,
            )
    finally:
        web.stop()
    result.note(
        f"{processes} web processes (scripts/web.sh, WEB_CONCURRENCY {os.environ.get('WEB_CONCURRENCY') or 'unset'}), "
        f"CACHE_URL set; {settings.EVENT_STREAMS_PER_USER} streams per user (the default): the owner and approvers"
    )
    return result
