"""Dependency batching: topological levels, each cut into chunks of at most max_parallel.

Pure functions over keys and edges; linear in subtasks + dependencies.
"""

from collections.abc import Mapping, Sequence


class CycleError(ValueError):
    """The dependencies contain a cycle; `cycle` lists its keys, each depending on the next."""

    def __init__(self, cycle: list[str]) -> None:
        super().__init__("Dependencies form a cycle: " + " -> ".join([*cycle, cycle[0]]))
        self.cycle = cycle


def topological_levels(keys: Sequence[str], depends_on: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Return the keys grouped by level, each level in the order the keys were given.

    A key with no dependencies is on level 0; any other key is one level above its
    deepest dependency. Every key in `depends_on` values must be in `keys`.
    Raise CycleError naming one cycle when there is no such order.
    """
    index = {key: position for position, key in enumerate(keys)}
    dependencies: list[list[int]] = [[index[dep] for dep in depends_on.get(key, ())] for key in keys]
    dependents: list[list[int]] = [[] for _ in keys]
    waiting_on = [len(deps) for deps in dependencies]
    for position, deps in enumerate(dependencies):
        for dep in deps:
            dependents[dep].append(position)

    levels: list[list[int]] = []
    level = [position for position, count in enumerate(waiting_on) if count == 0]
    placed = 0
    while level:
        levels.append(level)
        placed += len(level)
        following: list[int] = []
        for position in level:
            for dependent in dependents[position]:
                waiting_on[dependent] -= 1
                if waiting_on[dependent] == 0:
                    following.append(dependent)
        following.sort()
        level = following

    if placed < len(keys):
        raise CycleError([keys[position] for position in _find_cycle(dependencies, waiting_on)])
    return [[keys[position] for position in level] for level in levels]


def _find_cycle(dependencies: list[list[int]], waiting_on: list[int]) -> list[int]:
    """Return one cycle among the nodes left unplaced (those still waiting on a dependency).

    Every unplaced node depends on at least one other unplaced node, so following such
    dependencies from any unplaced node must come back to a node already on the path.
    """
    node = next(position for position, count in enumerate(waiting_on) if count > 0)
    seen_at: dict[int, int] = {}
    path: list[int] = []
    while node not in seen_at:
        seen_at[node] = len(path)
        path.append(node)
        node = next(dep for dep in dependencies[node] if waiting_on[dep] > 0)
    return path[seen_at[node] :]


def chunk_levels(levels: Sequence[Sequence[str]], max_parallel: int) -> list[list[str]]:
    """Cut each level into consecutive chunks of at most `max_parallel` keys."""
    if max_parallel < 1:
        raise ValueError("max_parallel must be at least 1")
    return [
        list(level[start : start + max_parallel]) for level in levels for start in range(0, len(level), max_parallel)
    ]
