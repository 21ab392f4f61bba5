"""The python agent: calls a callable named by a dotted path with the context.

The path comes from the agent's settings (`callable`) or, when the agent has none, from
the subtask input's `callable`, which must lie in one of the modules listed in
EXECUTION_PYTHON_AGENT_MODULES. The callable returns a step (Finish, ToolCall, ToolCalls, Fail) or
any other value, which is the result.
"""

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from execution.agents.base import STEP_TYPES, BaseAgent, Context, Fail, Finish, Step


class PythonAgent(BaseAgent):
    description = "Calls a Python callable (dotted path) with the context."

    def _path(self, task_input: dict[str, Any]) -> str:
        return self.options.get("callable") or task_input.get("callable") or ""

    def validate_input(self, task_input: dict[str, Any]) -> list[str]:
        path = self._path(task_input)
        if not isinstance(path, str) or not path:
            return ["callable (a dotted path) is required."]
        if not self.options.get("callable") and not any(
            path.startswith(f"{module}.") for module in settings.EXECUTION_PYTHON_AGENT_MODULES
        ):
            allowed = ", ".join(settings.EXECUTION_PYTHON_AGENT_MODULES) or "none configured"
            return [f"callable must be in a module listed in EXECUTION_PYTHON_AGENT_MODULES ({allowed})."]
        try:
            import_string(path)
        except ImportError:
            return [f"callable {path!r} cannot be imported."]
        return []

    def run(self, context: Context) -> Step:
        problems = self.validate_input(context["input"])
        if problems:
            return Fail(" ".join(problems))
        function: Callable[[Context], Any] = import_string(self._path(context["input"]))
        value = function(context)
        return value if isinstance(value, STEP_TYPES) else Finish(value)
