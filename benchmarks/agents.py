"""A python agent for the resume benchmark: it stamps each of its runs and asks for one tool call."""

import time
from typing import Any

from benchmarks.tasks import marks
from execution.agents.base import Finish, Step, ToolCall


def ask_once(context: dict[str, Any]) -> Step:
    """Stamp this run's start under the input's `probe` key; ask for a tool call on the first run only."""
    marks().rpush(context["input"]["probe"], time.time())
    if not context["tool_calls"]:
        return ToolCall(tool="bench.tool", arguments={})
    return Finish("resumed")
