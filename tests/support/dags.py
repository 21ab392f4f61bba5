"""Random plans for property tests, and what an independent reading of the rules expects of each.

A drawn plan is a DAG (each subtask depends on some of those before it in a hidden order),
submitted in another order, then perhaps spoiled: extra edges (which may close a cycle),
a duplicate key, a dependency on a key that does not exist, an agent that does not exist.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.support.factories import plan_data, subtask

UNKNOWN_AGENT = "wizard"


@dataclass(frozen=True)
class Drawn:
    """A drawn plan: its subtasks in submission order and its max_parallel."""

    subtasks: tuple[dict[str, Any], ...]
    max_parallel: int

    def data(self, **fields: Any) -> dict[str, Any]:
        return plan_data(*self.subtasks, max_parallel=self.max_parallel, **fields)

    @property
    def deps(self) -> dict[str, list[str]]:
        return {each["key"]: each["depends_on"] for each in self.subtasks}


def rarely(draw: Callable, chance_in: int) -> bool:
    """Return True about once in `chance_in` draws (a middle value: Hypothesis favours the ends of a range)."""
    return draw(st.integers(0, chance_in - 1)) == chance_in // 2


@st.composite
def plans(
    draw,
    *,
    max_size: int = 30,
    spoil: bool = True,
    agent: str = "script",
    input_of: Callable[[Any], dict] | None = None,
) -> Drawn:
    """Draw a plan of 1..max_size subtasks for `agent`; with `spoil`, sometimes one that breaks a rule."""
    size = draw(st.integers(1, max_size))
    hidden_order = draw(st.permutations([f"k{index}" for index in range(size)]))
    deps: dict[str, list[str]] = {}
    for position, key in enumerate(hidden_order):
        earlier = hidden_order[:position]
        deps[key] = draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True)) if earlier else []
    agents = dict.fromkeys(deps, agent)
    if spoil:
        extra_edges = draw(st.integers(1, 2)) if rarely(draw, 3) else 0
        for _ in range(extra_edges):
            source, target = draw(st.sampled_from(hidden_order)), draw(st.sampled_from(hidden_order))
            if target not in deps[source]:
                deps[source].append(target)
        if rarely(draw, 10):
            deps[draw(st.sampled_from(hidden_order))].append("ghost")
        if rarely(draw, 10):
            agents[draw(st.sampled_from(hidden_order))] = UNKNOWN_AGENT
    submitted = draw(st.permutations(hidden_order))
    subtasks = [
        subtask(key, *deps[key], agent=agents[key], **({"input": input_of(draw)} if input_of else {}))
        for key in submitted
    ]
    if spoil and rarely(draw, 10):
        subtasks.append(dict(draw(st.sampled_from(subtasks))))
    max_parallel = draw(st.one_of(st.integers(1, 5), st.just(64)))
    return Drawn(subtasks=tuple(subtasks), max_parallel=max_parallel)


def expected_error(drawn: Drawn) -> str:
    """Return the error code the rules give this plan, in their documented order, or "" when it is valid."""
    keys = [each["key"] for each in drawn.subtasks]
    if len(set(keys)) != len(keys):
        return "duplicate_key"
    if any(each["agent"] == UNKNOWN_AGENT for each in drawn.subtasks):
        return "unknown_agent"
    if any(dep not in keys for deps in drawn.deps.values() for dep in deps):
        return "unknown_dependency"
    if levels(drawn) is None:
        return "cyclic_dependencies"
    return ""


def levels(drawn: Drawn) -> dict[str, int] | None:
    """Return each subtask's level (1 + the deepest of its dependencies), or None when they form a cycle."""
    deps = drawn.deps
    found: dict[str, int] = {}
    # Peel off, round after round, the subtasks whose dependencies all have a level.
    while len(found) < len(deps):
        ready = {
            key: max((found[dep] + 1 for dep in deps[key]), default=0)
            for key in deps
            if key not in found and all(dep in found for dep in deps[key])
        }
        if not ready:
            return None
        found.update(ready)
    return found


def expected_batches(drawn: Drawn) -> list[list[str]]:
    """Return the batches the rules give a valid plan: levels in order, in submission order, cut by max_parallel."""
    level_of = levels(drawn)
    assert level_of is not None
    batches: list[list[str]] = []
    for level in range(max(level_of.values()) + 1):
        keys = [each["key"] for each in drawn.subtasks if level_of[each["key"]] == level]
        batches.extend(keys[start : start + drawn.max_parallel] for start in range(0, len(keys), drawn.max_parallel))
    return batches


def is_cycle(drawn: Drawn, cycle: list[str]) -> bool:
    """Return whether the keys, in this order (either direction), follow dependency edges back to the first."""
    deps = drawn.deps
    pairs = list(zip(cycle, [*cycle[1:], cycle[0]], strict=True))
    return bool(cycle) and (
        all(after in deps[before] for before, after in pairs) or all(before in deps[after] for before, after in pairs)
    )
