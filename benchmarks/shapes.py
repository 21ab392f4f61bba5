"""Plan shapes the scenarios submit, the same shapes as raw Celery batches, and their ideal makespans."""

import random
from typing import Any

from plans.shape import MAX_PARALLEL_LIMIT

# The largest max_parallel a plan may ask for.
MAX_PARALLEL = MAX_PARALLEL_LIMIT

Levels = list[list[int]]  # per level, each subtask's sleep in milliseconds (0: a no-op)


def no_ops(levels: int, width: int) -> Levels:
    return [[0] * width for _ in range(levels)]


def seeded_sleeps(levels: int, width: int, *, seed: int, top_ms: int = 50) -> Levels:
    rng = random.Random(seed)
    return [[rng.randint(0, top_ms) for _ in range(width)] for _ in range(levels)]


def one_or_two(level: int, index: int, width: int) -> list[int]:
    """Return the indexes in the previous level a subtask depends on: one, or two for every other one."""
    if level == 0:
        return []
    return sorted({index, (index + 1) % width}) if index % 2 else [index]


def layered_plan(
    sleeps: Levels, *, goal: str = "benchmark", requires_approval: bool = True, edges: int = 0, seed: int = 7
) -> dict[str, Any]:
    """Return a plan of these levels: each subtask depends on one or two of the previous level,
    or, with `edges`, on about that many in all, spread evenly (at least one on the previous level).
    """
    width = len(sleeps[0])
    rng = random.Random(seed)
    count = sum(len(level) for level in sleeps)
    per_subtask = edges / (count - width) if edges else 0.0
    subtasks, owed = [], 0.0
    for level, level_sleeps in enumerate(sleeps):
        for index, ms in enumerate(level_sleeps):
            if not level:
                deps: list[str] = []
            elif per_subtask:
                owed += per_subtask
                take = min(width, max(1, int(owed)))
                owed -= take
                deps = [f"l{level - 1}-{i}" for i in sorted(rng.sample(range(width), take))]
            else:
                deps = [f"l{level - 1}-{i}" for i in one_or_two(level, index, width)]
            subtasks.append(
                {
                    "key": f"l{level}-{index}",
                    "description": "benchmark step",
                    "agent": "script",
                    "depends_on": deps,
                    "input": {"sleep_ms": ms} if ms else {},
                }
            )
    return {"goal": goal, "requires_approval": requires_approval, "max_parallel": MAX_PARALLEL, "subtasks": subtasks}


def engine_batches(sleeps: Levels) -> Levels:
    """Return the batches the engine runs these levels in: each level cut into chunks of max_parallel."""
    return [level[start : start + MAX_PARALLEL] for level in sleeps for start in range(0, len(level), MAX_PARALLEL)]


def barrier_bound(batches: Levels, processes: int) -> float:
    """Return the least makespan (s) of these batches when each waits for the one before."""
    return sum(max(max(batch), sum(batch) / processes) for batch in batches) / 1000


def lower_bound(sleeps: Levels, processes: int) -> tuple[float, float, float]:
    """Return (critical path, total work, max(critical path, work / processes)) in seconds for layered_plan."""
    width = len(sleeps[0])
    finish = sleeps[0][:]
    for level in sleeps[1:]:
        finish = [ms + max(finish[j] for j in one_or_two(1, i, width)) for i, ms in enumerate(level)]
    critical = max(finish) / 1000
    work = sum(sum(level) for level in sleeps) / 1000
    return critical, work, max(critical, work / processes)
