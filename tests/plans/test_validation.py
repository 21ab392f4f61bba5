"""Plan validation: every rule gives its API error code and a useful message."""

import pytest

from plans.validation import Limits, PlanInvalid, validate_plan

AGENTS = {"script", "coder", "debug", "ask"}


def plan(*subtasks, **fields):
    return {"goal": "Ship the feature", "subtasks": list(subtasks), **fields}


def subtask(key, *depends_on, agent="script", **fields):
    return {"key": key, "description": f"do {key}", "agent": agent, "depends_on": list(depends_on), **fields}


def rejected(data, **kwargs) -> PlanInvalid:
    with pytest.raises(PlanInvalid) as caught:
        validate_plan(data, agents=AGENTS, **kwargs)
    return caught.value


def test_valid_plan_gets_defaults_and_batches():
    spec = validate_plan(plan(subtask("a"), subtask("b", "a"), subtask("c", "a")), agents=AGENTS)
    assert spec.max_parallel == 3
    assert spec.failure_policy == "fail_fast"
    assert spec.requires_approval is True
    assert spec.auto_execute is True
    assert spec.batches == (("a",), ("b", "c"))
    assert spec.subtasks[1].depends_on == ("a",)
    assert spec.subtasks[0].max_retries == 3
    assert spec.subtasks[0].timeout_s is None


def test_repeated_dependency_is_kept_once():
    spec = validate_plan(plan(subtask("a"), subtask("b", "a", "a")), agents=AGENTS)
    assert spec.subtasks[1].depends_on == ("a",)


def test_duplicate_keys_are_named():
    error = rejected(plan(subtask("a"), subtask("b"), subtask("a")))
    assert error.code == "duplicate_key"
    assert error.details == {"keys": ["a"]}


def test_unknown_dependency_names_subtask_and_key():
    error = rejected(plan(subtask("a"), subtask("b", "a", "nope")))
    assert error.code == "unknown_dependency"
    assert error.details == {"subtasks": {"b": ["nope"]}}
    assert "nope" in error.message


def test_self_dependency_is_a_cycle():
    error = rejected(plan(subtask("a", "a")))
    assert error.code == "cyclic_dependencies"
    assert error.details == {"cycle": ["a"]}


def test_cycle_lists_its_keys():
    error = rejected(plan(subtask("a", "c"), subtask("b", "a"), subtask("c", "b"), subtask("d")))
    assert error.code == "cyclic_dependencies"
    assert sorted(error.details["cycle"]) == ["a", "b", "c"]


def test_unknown_agent_is_named_with_its_subtask():
    error = rejected(plan(subtask("a"), subtask("b", agent="wizard")))
    assert error.code == "unknown_agent"
    assert error.details["agents"] == ["wizard"]
    assert error.details["subtasks"] == {"b": "wizard"}


def test_too_many_subtasks_reports_the_limit():
    error = rejected(plan(*[subtask(f"s{i}") for i in range(6)]), limits=Limits(max_subtasks=5))
    assert error.code == "too_many_subtasks"
    assert error.details == {"limit": 5, "count": 6}


def test_too_many_subtasks_is_checked_before_each_subtask():
    error = rejected(plan(*[{"broken": True}] * 6), limits=Limits(max_subtasks=5))
    assert error.code == "too_many_subtasks"


def test_goal_and_description_sizes_are_limited():
    limits = Limits(max_goal_length=10, max_description_length=3)
    error = rejected({**plan(subtask("a")), "goal": "x" * 11}, limits=limits)
    assert error.code == "validation_error"
    assert "goal" in error.details
    assert "subtasks[0].description" in error.details


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"subtasks": [subtask("a")]}, "goal"),
        (plan(subtask("a"), goal="   "), "goal"),
        (plan(), "subtasks"),
        ({"goal": "g", "subtasks": "a,b"}, "subtasks"),
        (plan(subtask("a"), max_parallel=0), "max_parallel"),
        (plan(subtask("a"), max_parallel=65), "max_parallel"),
        (plan(subtask("a"), max_parallel="3"), "max_parallel"),
        (plan(subtask("a"), max_parallel=True), "max_parallel"),
        (plan(subtask("a"), failure_policy="sometimes"), "failure_policy"),
        (plan(subtask("a"), requires_approval="yes"), "requires_approval"),
        (plan(subtask("a"), metadata=[]), "metadata"),
        (plan(subtask("a"), callback_url="ftp://example.com"), "callback_url"),
        (plan(subtask("a"), dependencies=["x"]), "dependencies"),
        (plan({"description": "d", "agent": "script"}), "subtasks[0].key"),
        (plan(subtask("a b")), "subtasks[0].key"),
        (plan(subtask("../x")), "subtasks[0].key"),
        (plan(subtask("a", agent=None)), "subtasks[0].agent"),
        (plan({**subtask("a"), "depends_on": "b"}), "subtasks[0].depends_on"),
        (plan(subtask("a", input=[1])), "subtasks[0].input"),
        (plan(subtask("a", max_retries=-1)), "subtasks[0].max_retries"),
        (plan(subtask("a", timeout_s=0)), "subtasks[0].timeout_s"),
        (plan(subtask("a", timeout_s=10**9)), "subtasks[0].timeout_s"),
        (plan(subtask("a", colour="red")), "subtasks[0].colour"),
        (plan("a"), "subtasks[0]"),
    ],
)
def test_bad_fields_are_validation_errors_naming_the_field(data, field):
    error = rejected(data)
    assert error.code == "validation_error"
    assert field in error.details, error.details


def test_all_field_errors_are_reported_at_once():
    error = rejected(plan(subtask("a", max_retries="x"), subtask("b", timeout_s=-5), max_parallel=0))
    assert set(error.details) == {"max_parallel", "subtasks[0].max_retries", "subtasks[1].timeout_s"}


def test_not_an_object_is_a_validation_error():
    assert rejected([1, 2]).code == "validation_error"


def test_agents_may_reject_their_input():
    def check_input(agent, task_input):
        return ["sleep_ms must be an integer."] if "sleep_ms" in task_input else []

    error = rejected(plan(subtask("a", input={"sleep_ms": "x"})), check_input=check_input)
    assert error.code == "validation_error"
    assert error.details == {"subtasks[0].input": ["sleep_ms must be an integer."]}
