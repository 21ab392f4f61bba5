"""Run the fault scenarios in a pytest session of their own, against PostgreSQL and Redis of their own.

    python -m tests.faults [pytest options]      # e.g. -q -s -k database

The scenarios stop, restart and flush their servers, so the servers cannot be the suite's:
this picks free ports and a folder, and the session it starts (tests/faults/scenarios)
starts PostgreSQL and Redis there, as its own child processes, before anything connects.
Settings are read from the environment when pytest starts, so the URLs are set here.
"""

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
DATABASE_NAME = "plans"


@dataclass(frozen=True)
class FaultStack:
    """Where the fault session's servers live: a folder, two ports and two passwords, passed to it by environment."""

    workdir: Path
    postgres_port: int
    redis_port: int
    postgres_password: str
    redis_password: str

    @classmethod
    def new(cls, workdir: Path) -> "FaultStack":
        from scripts.servers import free_port, new_password

        return cls(
            workdir=workdir,
            postgres_port=free_port(),
            redis_port=free_port(),
            postgres_password=new_password(),
            redis_password=new_password(),
        )

    @classmethod
    def from_environment(cls) -> "FaultStack | None":
        """Return the stack this process was started for, or None outside a fault session."""
        if not os.environ.get("FAULTS_DIR"):
            return None
        return cls(
            workdir=Path(os.environ["FAULTS_DIR"]),
            postgres_port=int(os.environ["FAULTS_POSTGRES_PORT"]),
            redis_port=int(os.environ["FAULTS_REDIS_PORT"]),
            postgres_password=os.environ["FAULTS_POSTGRES_PASSWORD"],
            redis_password=os.environ["FAULTS_REDIS_PASSWORD"],
        )

    @property
    def figures(self) -> Path:
        return self.workdir / "figures.jsonl"

    def environment(self) -> dict[str, str]:
        return {
            "FAULTS_DIR": str(self.workdir),
            "FAULTS_POSTGRES_PORT": str(self.postgres_port),
            "FAULTS_REDIS_PORT": str(self.redis_port),
            "FAULTS_POSTGRES_PASSWORD": self.postgres_password,
            "FAULTS_REDIS_PASSWORD": self.redis_password,
            "DATABASE_URL": f"postgresql://postgres:{self.postgres_password}@127.0.0.1:{self.postgres_port}/{DATABASE_NAME}",
            # Chord counters and results in the broker's Redis (the default): a broker restart loses them too.
            "CELERY_BROKER_URL": f"redis://:{self.redis_password}@127.0.0.1:{self.redis_port}/0",
        }


def record_figures(scenario: str, **figures: Any) -> None:
    """Print a scenario's figures and keep them for the session's summary (see docs/reliability.md)."""
    print(f"figures {scenario}: " + ", ".join(f"{name}={value}" for name, value in figures.items()))
    stack = FaultStack.from_environment()
    if stack is not None:
        with stack.figures.open("a") as file:
            file.write(json.dumps({"scenario": scenario, **figures}) + "\n")


def read_figures(stack: FaultStack) -> list[dict[str, Any]]:
    if not stack.figures.exists():
        return []
    return [json.loads(line) for line in stack.figures.read_text().splitlines() if line]


@dataclass(frozen=True)
class SessionRun:
    status: int
    figures: list[dict[str, Any]]
    workdir: Path  # removed after a passing session; kept, with the servers' logs, after a failing one


def run_session(args: list[str], *, output: Path | None = None) -> SessionRun:
    """Run pytest on the scenarios with servers of their own; return its exit status and the figures recorded."""
    # Under /tmp itself, not a private pytest folder: PostgreSQL runs as another user and must reach it.
    stack = FaultStack.new(Path(tempfile.mkdtemp(prefix="faults-")))
    env = {key: value for key, value in os.environ.items() if key not in ("CACHE_URL", "PYTEST_ADDOPTS")}
    env.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    env.update(stack.environment())
    paths = [arg for arg in args if arg.startswith(str(SCENARIOS.relative_to(ROOT)))]
    options = [arg for arg in args if arg not in paths]
    command = [sys.executable, "-m", "pytest", *(paths or [str(SCENARIOS)]), "-p", "no:cacheprovider", *options]
    if output is None:
        status = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
    else:
        with output.open("wb") as log:
            status = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    figures = read_figures(stack)
    if status == 0:
        shutil.rmtree(stack.workdir, ignore_errors=True)
    return SessionRun(status=status, figures=figures, workdir=stack.workdir)


def main() -> int:
    run = run_session(sys.argv[1:])
    for figures in run.figures:
        print(json.dumps(figures))
    if run.status:
        print(f"The servers' files and logs are kept in {run.workdir}")
    return run.status
