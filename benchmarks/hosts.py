"""`hosts`: 400 subtasks of 50 ms on the subtask workers of one network host, then of two.

Each host is a network namespace joined to this one, which holds PostgreSQL and Redis, by a veth
pair (benchmarks/namespaces.py). Its subtask workers start as docs/processes.md says,
`celery -A config worker --queues subtasks` (with `--concurrency 2`, as `scaling`'s middle step,
and a `--hostname` of their own), under `ip netns exec`, with DATABASE_URL, CELERY_BROKER_URL and
CELERY_RESULT_BACKEND naming the servers at the host's end of its pair. The shared stack's web,
control worker and beat stay in this namespace; its own subtask worker is stopped meanwhile.
One host: 2 processes in host 1; two hosts: 2 more in host 2, started for each such run and
stopped after it (the hosts share this machine's cores: they stand for machines on a network,
not for more CPU). Each run is one plan of
independent subtasks approved over HTTP; afterwards the invariants the tests check
(tests/support/invariants.py) must hold on it.
"""

import itertools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from celery import current_app
from django.conf import settings
from django.db.models import Count
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from benchmarks.bench import Bench, engine_run, scenario_result
from benchmarks.client import wait_finished
from benchmarks.harness import SUBTASK_CONCURRENCY, workers_answering
from benchmarks.namespaces import Host, Hosts, Unavailable
from benchmarks.report import Result
from benchmarks.shapes import MAX_PARALLEL, layered_plan
from plans.models import Plan, Subtask
from scripts.processes import Worker, current_database_url
from tests.support.invariants import assert_invariants

SUBTASKS, SLEEP_MS = 400, 50
PROCESSES = 2  # subtask worker processes per host
HOSTS = 2
REDIS_SCHEMES = ("redis", "rediss")


def database_server() -> tuple[str, int]:
    params = conninfo_to_dict(current_database_url())
    host = str(params.get("host") or "")
    if not host or host.startswith("/"):
        raise Unavailable("PostgreSQL is reached over a unix socket here: a namespace needs TCP")
    return host, int(params.get("port") or 5432)


def redis_server(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES or not parts.hostname:
        raise Unavailable(f"{parts.scheme}: is not Redis over TCP")
    return parts.hostname, parts.port or 6379


def servers(broker_url: str, result_backend: str) -> list[tuple[str, int]]:
    """Return the servers the subtask workers connect to (host, port), each once."""
    found = [database_server(), redis_server(broker_url)]
    if urlsplit(result_backend).scheme in REDIS_SCHEMES:
        found.append(redis_server(result_backend))
    return list(dict.fromkeys(found))


def through(url: str, host: Host) -> str:
    """Return a Redis URL as a process on `host` reaches that server."""
    parts = urlsplit(url)
    address, port = host.reach(*redis_server(url))
    login = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{login}@{address}:{port}" if login else f"{address}:{port}"))


def host_env(env: dict[str, str], host: Host) -> dict[str, str]:
    """Return the stack's environment with every server named as `host` reaches it."""
    database = conninfo_to_dict(current_database_url())
    database["host"], database["port"] = host.reach(*database_server())
    backend = env["CELERY_RESULT_BACKEND"]
    return {
        **env,
        "DATABASE_URL": make_conninfo(**database),  # type: ignore[arg-type]
        "CELERY_BROKER_URL": through(env.get("CELERY_BROKER_URL") or settings.CELERY_BROKER_URL, host),
        "CELERY_RESULT_BACKEND": through(backend, host) if urlsplit(backend).scheme in REDIS_SCHEMES else backend,
    }


def start_workers(bench: Bench, host: Host) -> Worker:
    name = f"host{host.number}-subtasks"
    args = ["worker", "--queues", "subtasks", "--concurrency", str(PROCESSES), "--hostname", f"{name}@%h"]
    env = host_env(bench.stack.env, host)
    return Worker(name, args, env, bench.log_dir / "hosts", wrapper=host.wrapper)


def wait_ready(workers: list[Worker], timeout: float = 90) -> None:
    workers_answering(current_app, workers, what="the hosts' workers", timeout=timeout)


def machine_cpu() -> tuple[float, float]:
    """Return the machine's CPU time so far: (busy, all), in clock ticks over every core (/proc/stat)."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


@dataclass
class Run:
    """One plan's run: its throughput, what breaks an invariant, who ran it and what it cost."""

    per_s: float
    problem: str
    by_host: dict[str, int]
    busy: float  # share of the machine's CPU time spent (all processes, others' included)
    forwarder_ms: float  # the forwarders' CPU time per subtask
    gap_ms: float  # median, over the batches, from a batch's last completion to the next one's first start


def batch_gap_ms(plan_id: str) -> float:
    """Return the median time between batches: the last subtask of one done, the first of the next started."""
    batches: dict[int, list[tuple[float, float]]] = {}
    rows = Subtask.objects.filter(plan_id=plan_id, started_at__isnull=False, completed_at__isnull=False)
    for key, started, completed in rows.values_list("key", "started_at", "completed_at"):
        assert started is not None
        assert completed is not None
        batches.setdefault(int(key.rsplit("-", 1)[1]) // MAX_PARALLEL, []).append(
            (started.timestamp(), completed.timestamp())
        )
    ordered = [batches[index] for index in sorted(batches)]
    gaps = [
        min(start for start, _ in after) - max(end for _, end in before)
        for before, after in itertools.pairwise(ordered)
    ]
    return statistics.median(gaps) * 1000 if gaps else 0.0


def one_run(bench: Bench, hosts: list[Host], count: int) -> Run:
    plan_id = bench.api.submit(layered_plan([[SLEEP_MS] * count], goal="benchmark: hosts"))
    forwarders, (busy, total) = sum(host.forwarder_cpu_s() for host in hosts), machine_cpu()
    start = time.time()
    bench.api.approve_plan(plan_id)
    seconds = wait_finished([plan_id]) - start
    forwarders, (busy, total) = (
        sum(host.forwarder_cpu_s() for host in hosts) - forwarders,
        [after - before for after, before in zip(machine_cpu(), (busy, total), strict=True)],
    )
    try:
        assert_invariants(Plan.objects.get(pk=plan_id))
        problem = ""
    except AssertionError as error:
        problem = str(error)
    by_host: dict[str, int] = {}
    for worker, n in Subtask.objects.filter(plan_id=plan_id).values_list("worker").annotate(n=Count("id")):
        by_host[worker.split("-")[0]] = by_host.get(worker.split("-")[0], 0) + n
    return Run(count / seconds, problem, by_host, busy / total, forwarders * 1000 / count, batch_gap_ms(plan_id))


def warm_up(bench: Bench, hosts: int) -> None:
    """Run a small plan first: a fresh pool process imports and connects on its first tasks."""
    engine_run(bench.api, layered_plan([[SLEEP_MS] * (4 * PROCESSES * hosts)], goal="benchmark: warm-up"))
    bench.stack.settle()


def record(result: Result, hosts: int, rep: int, done: Run) -> None:
    name = "one_host" if hosts == 1 else "two_hosts"
    result.add(f"{name}_per_s", done.per_s, "subtasks/s")
    result.add(f"{name}_cpu_busy", done.busy, "share")
    result.add(f"{name}_forwarder_cpu_ms", done.forwarder_ms, "ms/subtask")
    result.add(f"{name}_batch_gap_ms", done.gap_ms, "ms")
    result.fact(f"subtasks_by_host_{hosts}", done.by_host)
    print(
        f"  {hosts} host(s), rep {rep + 1}: {done.per_s:.1f} subtasks/s (ideal "
        f"{hosts * PROCESSES * 1000 / SLEEP_MS:.0f}/s); ran {done.by_host}; CPU {done.busy:.0%} busy, "
        f"forwarders {done.forwarder_ms:.2f} ms/subtask; between batches {done.gap_ms:.0f} ms; "
        f"invariants {'broken: ' + done.problem if done.problem else 'hold'}",
        flush=True,
    )


def measure(bench: Bench, result: Result, hosts: list[Host], count: int) -> None:
    """Each repetition runs the plan on host 1's workers alone, then with host 2's started beside them.

    Alternating (rather than every run on one host, then every run on two) lets the
    machine's other work weigh on both sides alike.
    """
    first = start_workers(bench, hosts[0])
    second: Worker | None = None
    runs: dict[int, list[Run]] = {1: [], 2: []}
    try:
        wait_ready([first])
        warm_up(bench, 1)
        for rep in range(bench.repeat):
            runs[1].append(one_run(bench, hosts, count))
            record(result, 1, rep, runs[1][-1])
            if second is None:
                second = start_workers(bench, hosts[1])
            else:
                second.restart()
            wait_ready([first, second])
            warm_up(bench, 2)
            runs[2].append(one_run(bench, hosts, count))
            record(result, 2, rep, runs[2][-1])
            second.stop()
            bench.stack.settle()
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.stop()
    for one, two in zip(runs[1], runs[2], strict=True):
        result.add("speedup", two.per_s / one.per_s, "x")
    problems = [done.problem for done in runs[1] + runs[2] if done.problem]
    result.fact("invariants_ok", not problems)
    for problem in problems:
        result.note(f"invariants: {problem}")


def run(bench: Bench) -> Result:
    count = bench.scaled(SUBTASKS, 4)
    result = scenario_result(
        "hosts", f"{count} subtasks of {SLEEP_MS} ms, {PROCESSES} worker processes per network host: 1 host, then 2"
    )
    result.fact("processes_per_host", PROCESSES)
    stack = bench.stack
    stack.settle()
    stack.workers["subtasks"].stop()  # only the hosts' workers may take the subtasks
    try:
        with Hosts(HOSTS, servers(settings.CELERY_BROKER_URL, stack.result_backend), bench.log_dir / "hosts") as made:
            result.fact(
                "hosts",
                [
                    {
                        "namespace": host.name,
                        "address": host.own_address,
                        "servers_at": host.address,
                        "delay_ms_each_way": host.delay_ms,
                    }
                    for host in made
                ],
            )
            for host in made:
                if host.delay_error:
                    result.note(f"host {host.number}: no delay on its link (netem refused): {host.delay_error}")
            measure(bench, result, made, count)
    except Unavailable as error:
        result.note(f"no figures: {error}")
    finally:
        stack.restart_subtasks(SUBTASK_CONCURRENCY)
    return result
