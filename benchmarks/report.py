"""Figures of a benchmark run: samples per repetition, their medians and spread, the table and the JSON."""

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celery
import django

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Figure:
    unit: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclass
class Result:
    """What one scenario measured: sampled figures (one sample per repetition) and plain facts."""

    name: str
    title: str
    figures: dict[str, Figure] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, value: float, unit: str = "") -> None:
        self.figures.setdefault(key, Figure(unit)).samples.append(float(value))

    def fact(self, key: str, value: Any) -> None:
        self.facts[key] = value

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {key: round(figure.median, 6) for key, figure in self.figures.items()}
        data.update(self.facts)
        data["spread"] = {key: [round(min(f.samples), 6), round(max(f.samples), 6)] for key, f in self.figures.items()}
        data["samples"] = {key: [round(value, 6) for value in f.samples] for key, f in self.figures.items()}
        data["units"] = {key: f.unit for key, f in self.figures.items() if f.unit}
        data["notes"] = self.notes
        return data


def number(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(results: list[Result]) -> str:
    """Return one table of every scenario's figures: median and min-max over the repetitions."""
    rows = [("scenario", "figure", "median", "min-max", "unit", "n")]
    for result in results:
        for key, figure in result.figures.items():
            spread = f"{number(min(figure.samples))}-{number(max(figure.samples))}"
            rows.append((result.name, key, number(figure.median), spread, figure.unit, str(len(figure.samples))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(width) if i < 2 or i == 4 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def machine() -> dict[str, Any]:
    """Describe what ran the benchmark: CPUs, memory, versions, the commit measured."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:")
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "django": django.get_version(),
        "celery": celery.__version__,
        "commit": f"{commit}{'+changes' if dirty else ''}",
    }


def write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).astimezone().isoformat(timespec="seconds")


# docs/benchmarks.md's table: (scenario, what, engine figure, raw figure or "", ratio figure or "", the goal).
HEADLINES = [
    (
        "as_documented",
        "10 x 50 no-ops, processes started as documented (s)",
        "engine_s",
        "raw_s",
        "ratio",
        "ratio <= 2",
    ),
    (
        "as_documented",
        "approve response -> resumed run starts, p50 (ms)",
        "resume_p50_ms",
        "raw_dispatch_p50_ms",
        "resume_ratio",
        "ratio <= 1.5",
    ),
    ("overhead", "10 x 100 no-op subtasks, approval to completed (s)", "engine_s", "raw_s", "ratio", "ratio <= 2"),
    ("overhead", "same, the raw chords in the engine's own workers (s)", "", "raw_in_app_s", "", ""),
    (
        "resume",
        "approve response -> resumed run starts, p50 (ms)",
        "engine_p50_ms",
        "raw_dispatch_p50_ms",
        "ratio",
        "ratio <= 2",
    ),
    ("resume", "same, p99 (ms)", "engine_p99_ms", "", "", ""),
    (
        "resume",
        "approve POST vs GET /agents/, p50 (ms)",
        "approve_request_p50_ms",
        "trivial_get_p50_ms",
        "approve_over_get",
        "<= 2",
    ),
    ("uneven", "0-50 ms sleeps: makespan (s)", "engine_s", "raw_s", "ratio", ""),
    ("uneven", "makespan / max(critical path, work / 4)", "engine_over_bound", "raw_over_bound", "", ""),
    ("parked", "busy worker slots while 1,000 plans wait", "busy_slots", "", "", "0"),
    (
        "parked",
        "subtask worker RSS before -> while parked (MB)",
        "subtasks_worker_rss_before_mb",
        "subtasks_worker_rss_after_mb",
        "",
        "",
    ),
    ("parked", "1,000 approvals by 8 threads -> all completed (s)", "engine_s", "raw_s", "ratio", "ratio <= 4"),
    ("parked", "CPU per decision: the web (ms)", "cpu_ms_per_decision_web", "", "", ""),
    ("parked", "CPU per decision: the subtask worker (ms)", "cpu_ms_per_decision_subtasks", "", "", ""),
    ("parked", "CPU per decision: the control worker (ms)", "cpu_ms_per_decision_control", "", "", ""),
    ("parked", "CPU per decision: PostgreSQL (ms)", "cpu_ms_per_decision_postgres", "", "", ""),
    ("parked", "CPU per decision: Redis (ms)", "cpu_ms_per_decision_redis", "", "", ""),
    ("parked", "CPU per decision: the benchmark's client threads (ms)", "cpu_ms_per_decision_clients", "", "", ""),
    ("bulk", "1,000 approvals in one request: the request, per 1,000 (s)", "seconds_per_1000", "", "", "<= 3"),
    ("bulk", "same: from sending it until every plan completed (s)", "completed_s", "", "", ""),
    ("inbox", "10,000 vs 100 pending: the slowest list's latency ratio", "ratio", "", "", "<= 2"),
    ("scaling", "400 x 50 ms, 1 process (subtasks/s)", "engine_1p_per_s", "raw_1p_per_s", "", ""),
    ("scaling", "400 x 50 ms, 2 processes (subtasks/s)", "engine_2p_per_s", "raw_2p_per_s", "", ""),
    ("scaling", "400 x 50 ms, 4 processes (subtasks/s)", "engine_4p_per_s", "raw_4p_per_s", "", ""),
    ("scaling", "speedup 4 processes / 1", "speedup_4p", "raw_speedup_4p", "", ">= 3"),
    ("hosts", "400 x 50 ms, 2 processes on 1 host (subtasks/s)", "one_host_per_s", "", "", ""),
    ("hosts", "400 x 50 ms, 2 processes on each of 2 hosts (subtasks/s)", "two_hosts_per_s", "", "", ""),
    ("hosts", "speedup 2 hosts / 1", "speedup", "", "", ">= 1.8"),
    (
        "many_plans",
        "100 plans x 10 no-ops at once (subtasks/s)",
        "engine_subtasks_per_s",
        "raw_tasks_per_s",
        "ratio",
        "",
    ),
    ("large_plan", "create 10,000 subtasks / 50,000 edges over HTTP (s)", "large_create_s", "", "", ""),
    ("large_plan", "web process peak RSS while creating it (MB)", "large_create_web_peak_rss_mb", "", "", ""),
    (
        "large_plan",
        "per subtask: 10,000-plan vs 1,000-plan (ms)",
        "large_per_subtask_ms",
        "small_per_subtask_ms",
        "per_subtask_ratio",
        "ratio <= 1.3",
    ),
    ("large_plan", "status latency 10,000 vs 1,000 (ms)", "large_status_ms", "small_status_ms", "", ""),
    (
        "large_plan",
        "detail latency 10,000 vs 1,000 (ms)",
        "large_detail_ms",
        "small_detail_ms",
        "detail_ratio",
        "ratio <= 3",
    ),
    ("stream", "event commit -> SSE client, p50 (ms)", "p50_ms", "", "", "< 100"),
    ("sse", "500 streams of one plan: commit -> every client, p50 (ms)", "p50_ms", "", "", ""),
    ("sse", "same, p99 (ms)", "p99_ms", "", "", "<= 1000"),
    (
        "sse",
        "web database connections with 500 streams open; web processes",
        "web_db_connections",
        "web_processes",
        "",
        "<= processes + 2",
    ),
    ("sse", "web processes' RSS before -> with 500 streams (MB)", "web_rss_before_mb", "web_rss_streams_mb", "", ""),
    ("model_stream", "model chunk written -> SSE client, p50 (ms)", "delta_p50_ms", "", "", ""),
    ("model_stream", "same, p99 (ms)", "delta_p99_ms", "", "", ""),
    ("model_stream", "50 subtasks streaming vs not streamed (s)", "streamed_s", "plain_s", "overhead", ""),
    ("canvas", "raw only: per-batch chords vs nested chain (s)", "per_batch_s", "nested_s", "ratio", ""),
    ("result_backend", "overhead plan: Redis vs django-db results (s)", "redis_s", "django_db_s", "ratio", ""),
]


def markdown(data: dict[str, Any]) -> str:
    """Return the headline figures of a latest.json as the table of docs/benchmarks.md."""
    rows = [
        "| scenario | figure | engine | baseline | ratio | goal |",
        "|---|---|---|---|---|---|",
    ]

    def cell(scenario: dict[str, Any], key: str) -> str:
        if not key or key not in scenario:
            return ""
        low, high = scenario.get("spread", {}).get(key, [scenario[key], scenario[key]])
        spread = f" ({number(low)}-{number(high)})" if low != high else ""
        return f"{number(scenario[key])}{spread}"

    for name, label, engine, baseline, ratio, goal in HEADLINES:
        scenario = data["scenarios"].get(name)
        if not scenario or "error" in scenario:
            continue
        cells = [name, label, cell(scenario, engine), cell(scenario, baseline), cell(scenario, ratio), goal]
        rows.append("| " + " | ".join(cells) + " |")
    queries = data["scenarios"].get("large_plan", {})
    if "small_status_queries" in queries:
        rows.append(
            f"| large_plan | queries: status, detail at 10,000 vs 1,000 | "
            f"{queries['large_status_queries']}, {queries['large_detail_queries']} | "
            f"{queries['small_status_queries']}, {queries['small_detail_queries']} | | same |"
        )
    inbox = data["scenarios"].get("inbox", {})
    if "admin_queue_small_queries" in inbox:
        lists = ("api_pending", "api_awaiting_decider", "api_awaiting_group", "admin_queue")
        rows.append(
            "| inbox | queries: pending, awaiting (decider, group member), admin queue at 10,000 vs 100 | "
            + ", ".join(str(inbox[f"{name}_large_queries"]) for name in lists)
            + " | "
            + ", ".join(str(inbox[f"{name}_small_queries"]) for name in lists)
            + " | | same |"
        )
    redrives = {name: s.get("reconciler", {}) for name, s in data["scenarios"].items() if "reconciler" in s}
    busy = {name: r for name, r in redrives.items() if r.get("resent_events") or r.get("log_lines")}
    rows.append(
        "\nReconciler: "
        + (
            "re-drove nothing in any scenario."
            if not busy
            else "; ".join(
                f"{name}: {r['resent_events']} resent events, {r['log_lines']} log lines "
                f"(lost runs {r.get('lost_runs', 0)}, resent {r.get('resent', 0)}, advanced {r.get('advanced', 0)})"
                for name, r in busy.items()
            )
        )
    )
    return "\n".join(rows)


if __name__ == "__main__":
    print(
        markdown(
            json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "benchmarks/results/latest.json").read_text())
        )
    )
