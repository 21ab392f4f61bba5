"""Run the benchmarks (`make bench`, or `make bench BENCH="overhead resume"`): one table, one JSON file."""

import json
import logging
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.core.management import call_command
from kombu.utils.url import maybe_sanitize_url

from benchmarks import (
    as_documented,
    bulk,
    canvas_shapes,
    event_stream,
    health,
    hosts,
    inbox,
    large_plan,
    many_plans,
    mcp,
    model_stream,
    overhead,
    parked,
    plan_validation,
    policy,
    result_backend,
    resume,
    revise,
    scaling,
    sse,
)
from benchmarks.bench import Bench
from benchmarks.profiling import profiled
from benchmarks.report import ROOT, Result, load_average, machine, markdown, now, table, write

SCENARIOS: dict[str, Callable[[Bench], Result]] = {
    "validation": plan_validation.run,
    "overhead": overhead.overhead,
    "resume": resume.run,
    "uneven": overhead.uneven,
    "parked": parked.run,
    "bulk": bulk.run,
    "inbox": inbox.run,
    "scaling": scaling.run,
    # Its own subtask workers in two network namespaces; the shared stack's is stopped meanwhile.
    "hosts": hosts.run,
    "many_plans": many_plans.run,
    "canvas": canvas_shapes.run,
    "stream": event_stream.run,
    "sse": sse.run,
    "health": health.run,
    "mcp": mcp.run,
    "model_stream": model_stream.run,
    "revise": revise.run,
    # The longest (two plans of 10,000 subtasks per repetition), so late: the rest is saved first.
    "large_plan": large_plan.run,
    # Both stop the shared stack: stacks of their own (documented workers consume every queue).
    "as_documented": as_documented.run,
    # Runs resume and parked twice, on stacks of their own (with and without the rules).
    "policy": policy.run,
    "result_backend": result_backend.run,
}
OUTPUT = ROOT / "benchmarks" / "results" / "latest.json"


def stop_on_sigterm(signum: int, frame: object) -> None:
    """Stop as on Ctrl-C, so the workers and the web server this run started are stopped too."""
    raise SystemExit(128 + signum)


def quieten() -> None:
    """Keep the output to the figures, and stop cleanly on SIGTERM as on Ctrl-C."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    # WhiteNoise, in this process's test client, would warn that collectstatic has not run.
    warnings.filterwarnings("ignore", message="No directory at")
    signal.signal(signal.SIGTERM, stop_on_sigterm)


def announce(bench: Bench, info: dict, load_before: Any) -> None:
    """Print the machine, its load and the run's settings before anything is measured."""
    print(
        f"machine: {info['cores']} cores ({info['cpu']}), {info['memory_gb']} GB, Python {info['python']}, "
        f"commit {info['commit']}\nload average before: {', '.join(map(str, load_before))}\n"
        f"scale {bench.scale}, {bench.repeat} repetition(s); result backend {maybe_sanitize_url(bench.result_backend)} "
        "(Redis; the raw baselines run in a minimal Celery app on workers of their own, Redis results too)",
        flush=True,
    )


def run_one(bench: Bench, name: str, output: Path) -> Result:
    """Run one scenario, then check what the reconciler re-drove meanwhile (it should be nothing)."""
    mark, load, began = bench.mark(), load_average(), time.monotonic()
    try:
        if os.environ.get("BENCH_PROFILE"):
            with profiled(bench, name, output.parent / "profiles"):
                result = SCENARIOS[name](bench)
        else:
            result = SCENARIOS[name](bench)
    finally:
        bench.settle()
    redrives = bench.redrives_since(mark)
    result.fact("reconciler", redrives)
    result.fact("load", {"before": load, "after": load_average()})
    result.fact("duration_s", round(time.monotonic() - began, 1))
    quiet = not redrives["resent_events"] and not redrives["log_lines"]
    print(
        f"  reconciler: {redrives['resent_events']} subtask.resent events, {redrives['log_lines']} "
        f"repair log lines {'(nothing re-driven)' if quiet else redrives}\n",
        flush=True,
    )
    return result


def main(names: list[str]) -> int:
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
        return 2
    quieten()
    output = Path(os.environ.get("BENCH_OUTPUT") or OUTPUT)
    bench = Bench(log_dir=output.parent / "logs")
    load_before = load_average()
    info = machine()
    announce(bench, info, load_before)
    call_command("migrate", verbosity=0)
    results: list[Result] = []
    scenarios: dict[str, dict] = {}
    failed: list[str] = []
    started = time.monotonic()

    def save(*, complete: bool) -> None:
        # Written after every scenario, so a run stopped halfway keeps what it measured.
        write(
            output,
            {
                "date": now(),
                "complete": complete,
                "machine": info,
                "load_before": load_before,
                "load_after": load_average(),
                "scale": bench.scale,
                "repeat": bench.repeat,
                "result_backend": maybe_sanitize_url(bench.result_backend),
                "duration_s": round(time.monotonic() - started, 1),
                "scenarios": scenarios,
            },
        )

    try:
        for name in names or SCENARIOS:
            try:
                result = run_one(bench, name, output)
            except Exception:
                traceback.print_exc()
                failed.append(name)
                scenarios[name] = {"error": traceback.format_exc(limit=3)}
                save(complete=False)
                continue
            results.append(result)
            scenarios[name] = result.to_json()
            save(complete=False)
    finally:
        bench.close()
    print(table(results))
    print(f"\nload average after: {', '.join(map(str, load_average()))}; {time.monotonic() - started:.0f} s in all")
    save(complete=True)
    print(f"\ndocs/benchmarks.md's table (from latest.json):\n{markdown(json.loads(output.read_text()))}\n")
    print(f"wrote {output}; the processes' logs are in {bench.log_dir}")
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
