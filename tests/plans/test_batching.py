"""Dependency batching: levels, chunks, determinism and cycles."""

import pytest

from plans.batching import CycleError, chunk_levels, topological_levels


def plan_batches(keys, depends_on, max_parallel):
    """Return the batches a plan runs in, as validation computes them."""
    return chunk_levels(topological_levels(keys, depends_on), max_parallel)


def test_independent_subtasks_form_one_level_in_given_order():
    assert topological_levels(["c", "a", "b"], {}) == [["c", "a", "b"]]


def test_diamond_runs_in_three_levels():
    deps = {"b": ["a"], "c": ["a"], "d": ["b", "c"]}
    assert topological_levels(["a", "b", "c", "d"], deps) == [["a"], ["b", "c"], ["d"]]


def test_level_is_one_above_the_deepest_dependency():
    # e depends on a (level 0) and d (level 2), so e is on level 3, not 1.
    deps = {"b": ["a"], "d": ["b"], "e": ["a", "d"]}
    assert topological_levels(["a", "b", "d", "e"], deps) == [["a"], ["b"], ["d"], ["e"]]


def test_levels_keep_submission_order_whatever_the_edge_order():
    deps = {"z": ["root"], "y": ["root"], "x": ["root"]}
    assert topological_levels(["root", "x", "y", "z"], deps) == [["root"], ["x", "y", "z"]]


def test_levels_are_cut_into_chunks_of_max_parallel():
    assert chunk_levels([["1", "2", "3", "4", "5"], ["6"]], 2) == [["1", "2"], ["3", "4"], ["5"], ["6"]]


def test_plan_batches_matches_the_seed_example():
    deps = {"task-4": ["task-1", "task-2", "task-3"]}
    keys = ["task-1", "task-2", "task-3", "task-4"]
    assert plan_batches(keys, deps, 3) == [["task-1", "task-2", "task-3"], ["task-4"]]
    assert plan_batches(keys, deps, 2) == [["task-1", "task-2"], ["task-3"], ["task-4"]]


def test_a_cycle_is_reported_with_its_keys():
    deps = {"a": ["c"], "b": ["a"], "c": ["b"], "d": []}
    with pytest.raises(CycleError) as caught:
        topological_levels(["a", "b", "c", "d"], deps)
    cycle = caught.value.cycle
    assert sorted(cycle) == ["a", "b", "c"]
    # Each key depends on the next one, the last on the first.
    for here, there in zip(cycle, cycle[1:] + cycle[:1], strict=True):
        assert there in deps[here]


def test_a_self_dependency_is_a_cycle_of_one():
    with pytest.raises(CycleError) as caught:
        topological_levels(["a", "b"], {"b": ["b"]})
    assert caught.value.cycle == ["b"]


def test_a_cycle_behind_valid_subtasks_is_found():
    deps = {"b": ["a"], "c": ["b", "e"], "d": ["c"], "e": ["d"]}
    with pytest.raises(CycleError) as caught:
        topological_levels(["a", "b", "c", "d", "e"], deps)
    assert sorted(caught.value.cycle) == ["c", "d", "e"]


def test_max_parallel_must_be_positive():
    with pytest.raises(ValueError, match="max_parallel"):
        chunk_levels([["a"]], 0)


def test_large_wide_graph_batches_every_key_once():
    keys = [f"k{i}" for i in range(10_000)]
    deps = {key: [keys[(i * 7 + j) % i] for j in range(5)] for i, key in enumerate(keys) if i}
    batches = plan_batches(keys, deps, 64)
    flat = [key for batch in batches for key in batch]
    assert sorted(flat) == sorted(keys)
    assert all(len(batch) <= 64 for batch in batches)
    batch_of = {key: index for index, batch in enumerate(batches) for key in batch}
    assert all(batch_of[dep] < batch_of[key] for key, key_deps in deps.items() for dep in key_deps)
