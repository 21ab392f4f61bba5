"""Agents that misbehave, through real workers: each ends as a clear subtask error, never as poison or a stuck plan."""

import pytest
from django.conf import settings

from plans.models import PlanStatus, SubtaskStatus
from tests.support.agents import MISBEHAVING_AGENTS
from tests.support.factories import subtask
from tests.support.flows import finished, start
from tests.support.invariants import assert_invariants

pytestmark = pytest.mark.usefixtures("engine")


@pytest.fixture(autouse=True)
def _misbehaving_agents_registered(settings) -> None:
    """Register the agents the workers have (tests/support/worker_settings.py), so plans naming them validate."""
    settings.EXECUTION_AGENTS = {**settings.EXECUTION_AGENTS, **MISBEHAVING_AGENTS}


def python(name: str, **fields) -> dict:
    """Return the subtask "agent", running tests.support.agents.<name> through the python agent."""
    extra = fields.pop("input", {})
    return subtask("agent", agent="python", input={"callable": f"tests.support.agents.{name}", **extra}, **fields)


def failed_alone(agent: dict, timeout: float = 60):
    """Run the misbehaving subtask after one and before another; return it once the plan has ended.

    What ran before it keeps its result; what depends on it is cancelled (fail_fast); the
    plan fails, and no run of it was lost to a crashed worker.
    """
    plan = finished(
        start(
            subtask("before", input={"result": "fine"}), {**agent, "depends_on": ["before"]}, subtask("after", "agent")
        ),
        timeout=timeout,
    )
    assert_invariants(plan)
    assert plan.status == PlanStatus.FAILED
    statuses = dict(plan.subtasks.values_list("key", "status"))
    assert statuses == {"before": SubtaskStatus.DONE, "agent": SubtaskStatus.FAILED, "after": SubtaskStatus.CANCELLED}
    failed = plan.subtasks.get(key="agent")
    assert failed.lost_runs == 0
    assert "Poison" not in failed.error
    return failed


def test_an_agent_that_raises_is_retried_then_fails_with_its_exception():
    agent = failed_alone(python("raises", max_retries=2))
    assert agent.attempts == 3
    assert agent.error == "RuntimeError: the agent fell over on attempt 3 (failed 3 times)"


def test_an_agent_that_hangs_past_its_timeout_fails_as_timed_out():
    agent = failed_alone(python("hangs", timeout_s=1, max_retries=0))
    assert agent.error == "Timed out after 1s."
    assert agent.attempts == 1


def test_an_agent_that_ignores_its_soft_time_limit_fails_as_timed_out_at_the_hard_limit():
    # Hard limit: 1s timeout + 2s grace, where the pool kills the process; then one retry, killed the same way.
    agent = failed_alone(python("ignores_its_time_limit", timeout_s=1, max_retries=1), timeout=90)
    assert agent.error == (
        "Timed out after 1s: the agent did not stop at its time limit, "
        "so its run was killed at the hard time limit (3s). (failed 2 times)"
    )
    assert agent.attempts == 2


def test_an_agent_returning_something_that_is_not_a_step_fails_saying_so():
    agent = failed_alone(subtask("agent", agent="not_a_step"))
    assert agent.error == "The agent returned dict, not a step (Finish, Fail, ToolCall or ToolCalls)."
    assert agent.attempts == 1


@pytest.mark.parametrize(
    ("callable_name", "problem"),
    [
        ("returns_a_set", "TypeError: Object of type set is not JSON serializable"),
        ("returns_an_object", "TypeError: Object of type object is not JSON serializable"),
    ],
)
def test_an_agent_returning_a_value_that_is_not_json_fails_naming_it(callable_name, problem):
    agent = failed_alone(python(callable_name))
    assert agent.error == f"The agent's result is not JSON-serialisable ({problem})."
    assert agent.result is None


def test_an_agent_returning_a_result_over_the_size_cap_fails_naming_the_limit():
    limit = settings.EXECUTION_MAX_RESULT_BYTES
    agent = failed_alone(python("returns_too_much", input={"size": limit + 1000}))
    assert agent.error == (
        f"The agent's result is {limit + 1002} bytes, over the limit of {limit} (EXECUTION_MAX_RESULT_BYTES)."
    )
    assert agent.result is None


@pytest.mark.parametrize(
    ("callable_name", "problem"),
    [
        ("returns_a_nul_character", "The agent's result cannot be stored: a string contains a NUL character"),
        ("returns_a_lone_surrogate", "The agent's result cannot be stored: a string is not valid Unicode"),
        ("asks_for_a_nameless_tool", "The agent asked for a tool call without a tool name."),
    ],
)
def test_an_agent_returning_what_postgresql_cannot_store_fails_naming_it(callable_name, problem):
    agent = failed_alone(python(callable_name))
    assert agent.error.startswith(problem)


def test_an_exception_message_postgresql_cannot_store_is_kept_readable():
    agent = failed_alone(python("fails_with_a_nul_character", max_retries=0))
    assert agent.error == "ValueError: bad byte \\x00 in the answer"
