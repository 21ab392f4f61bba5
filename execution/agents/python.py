"""The python agent: calls a callable named by a dotted path with the context.

The path comes from the agent's settings (`callable`) or, when the agent has none, from
the subtask input's `callable`, which EXECUTION_PYTHON_AGENT_MODULES must allow: each of
its entries is either an exact dotted name (`myproject.agents.summarise`) or `module:*`,
every public function defined in that very module (not in its submodules, and not a name
it imports from elsewhere). The callable returns a step (Finish, ToolCall, ToolCalls, Fail)
or any other value, which is the result.
"""

import inspect
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
        configured = bool(self.options.get("callable"))
        module = "" if configured else _allowing_module(path)
        if not configured and module is None:
            allowed = ", ".join(settings.EXECUTION_PYTHON_AGENT_MODULES) or "none configured"
            return [
                "callable must be allowed by EXECUTION_PYTHON_AGENT_MODULES (an exact dotted name, or module:* "
                f"for the functions defined in that module): {allowed}."
            ]
        try:
            function = import_string(path)
        except ImportError:
            return [f"callable {path!r} cannot be imported."]
        if module and not (inspect.isfunction(function) and function.__module__ == module):
            return [f"callable {path!r} is not a function defined in {module} (only those are allowed by {module}:*)."]
        if not callable(function):
            return [f"callable {path!r} is not callable."]
        return []

    def run(self, context: Context) -> Step:
        problems = self.validate_input(context["input"])
        if problems:
            return Fail(" ".join(problems))
        function: Callable[[Context], Any] = import_string(self._path(context["input"]))
        value = function(context)
        return value if isinstance(value, STEP_TYPES) else Finish(value)


def _allowing_module(path: str) -> str | None:
    """Return "" when an entry names `path` exactly, the module when a `module:*` entry covers it, else None."""
    owner, _, name = path.rpartition(".")
    module = None
    for entry in settings.EXECUTION_PYTHON_AGENT_MODULES:
        entry = entry.strip()
        if entry == path:
            return ""
        if entry.endswith(":*") and entry[:-2] == owner and name and not name.startswith("_"):
            module = owner
    return module
