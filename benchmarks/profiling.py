"""Sample the workers and the web process with py-spy while a scenario runs (BENCH_PROFILE=1): where their time goes."""

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.bench import Bench

WORKERS = ("subtasks", "control")


@contextmanager
def profiled(bench: Bench, name: str, directory: Path) -> Iterator[None]:
    """Record each worker (main and pool processes) and the web into `<directory>/<scenario>-<process>.txt`.

    The files are py-spy's collapsed stacks (one line per stack, with its sample count): feed
    them to a flame graph tool, or sort them. Profiles slow the workers down, so the figures of
    a profiled run are not the ones to compare.
    """
    spy = shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("BENCH_PROFILE needs py-spy (pinned in requirements-dev.txt)")
    directory.mkdir(parents=True, exist_ok=True)
    pids = {worker: bench.stack.workers[worker].pid for worker in WORKERS}
    if bench.stack.web is not None:
        pids["web"] = bench.stack.web.process.pid
    recorders = [
        subprocess.Popen(
            [
                spy,
                "record",
                "--subprocesses",
                "--idle",
                "--format",
                "raw",
                "--rate",
                "200",
                "--output",
                str(directory / f"{name}-{process}.txt"),
                "--pid",
                str(pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for process, pid in pids.items()
    ]
    try:
        yield
    finally:
        for recorder in recorders:
            recorder.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        for recorder in recorders:
            try:
                recorder.wait(30)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait()


def summary(path: Path, *, top: int = 20, prefix: tuple[str, ...] = ("execution/", "approvals/", "plans/")) -> str:
    """Return the project's functions seen most in a py-spy raw profile: inclusive share of samples.

    `python -m benchmarks.profiling FILE...` prints it.
    """
    inclusive: dict[str, int] = {}
    leaves: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            if any(part in frame for part in prefix):
                inclusive[frame] = inclusive.get(frame, 0) + count
        leaves[frames[-1]] = leaves.get(frames[-1], 0) + count
    lines = [f"{path.name}: {total} samples", "  inclusive, project code:"]
    for frame, count in sorted(inclusive.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"    {100 * count / max(total, 1):5.1f}%  {frame}")
    lines.append("  where the samples are (leaf frames):")
    for frame, count in sorted(leaves.items(), key=lambda item: -item[1])[: top // 2]:
        lines.append(f"    {100 * count / max(total, 1):5.1f}%  {frame}")
    return "\n".join(lines)


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(summary(Path(argument)))
