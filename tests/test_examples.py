"""The example plans in examples/ pass validation with the configured agents."""

import json
from pathlib import Path

import pytest

from approvals.rules import policy_file_read
from execution.agents.registry import agent_input_errors, agent_names
from plans.services import plan_limits
from plans.validation import validate_plan

# agents.json is an EXECUTION_AGENTS_FILE and policy.json an APPROVALS_POLICY_FILE, not plans.
NOT_PLANS = {"agents.json", "policy.json"}
EXAMPLES = sorted(
    path for path in (Path(__file__).resolve().parents[1] / "examples").glob("*.json") if path.name not in NOT_PLANS
)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_every_example_is_a_valid_plan(path):
    spec = validate_plan(
        json.loads(path.read_text()), agents=agent_names(), limits=plan_limits(), check_input=agent_input_errors
    )
    assert spec.subtasks


def test_the_flutter_example_uses_the_seeds_agents_and_asks_for_approvals():
    data = json.loads((Path(__file__).resolve().parents[1] / "examples" / "flutter_app.json").read_text())
    assert {item["agent"] for item in data["subtasks"]} == {"coder", "debug", "ask"}
    calls = [call for item in data["subtasks"] for call in item.get("input", {}).get("tool_calls", [])]
    assert any(call.get("requires_approval", True) for call in calls)
    assert any(call.get("requires_approval") is False for call in calls)


def test_the_example_policy_is_a_valid_policy_file():
    rules = policy_file_read(str(Path(__file__).resolve().parents[1] / "examples" / "policy.json"))
    assert [rule.decision for rule in rules] == ["deny", "allow", "allow", "ask", "ask"]
