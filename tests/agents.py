"""Callables for the python agent in tests (EXECUTION_PYTHON_AGENT_MODULES includes "tests")."""

import os
import signal
from typing import Any

from execution.agents.base import ToolCall, ToolCalls


def crash(context: dict[str, Any]) -> None:
    """Kill the worker process running this subtask, every time: a poison subtask."""
    os.kill(os.getpid(), signal.SIGKILL)


def dependency_keys(context: dict[str, Any]) -> list[str]:
    return sorted(context["dependencies"])


def two_tool_calls(context: dict[str, Any]) -> ToolCalls:
    return ToolCalls((ToolCall("read", call_id="1"), ToolCall("write", call_id="2")))
