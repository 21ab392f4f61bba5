"""Figures of a benchmark run: samples per repetition, their medians and spread, the table and the JSON."""

import datetime
import json
import os
import platform
import statistics
import subprocess
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
