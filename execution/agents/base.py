"""The agent contract: a context in, one step out (a result, a tool call, or a failure).

An agent is called once per run of a subtask. It returns the next step; raising any
exception means "this attempt failed, try again" (with backoff, up to max_retries),
while returning Fail means "this subtask has failed" (no retry).
"""

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Context = dict[str, Any]


@dataclass(frozen=True)
class Finish:
    """The subtask is done with this result.

    `conversation` and `usage` (on every step but a single ToolCall) are the agent's state
    to store with the subtask and hand back in the next run's context; None leaves the
    stored ones as they are.
    """

    result: Any
    conversation: list[dict[str, Any]] | None = field(default=None, kw_only=True)
    usage: dict[str, Any] | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class ToolCall:
    """The agent wants this tool called; with requires_approval a human decides first.

    `call_id` is the model's tool_call_id, kept with the call's entry in the history.
    """

    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)
    requires_approval: bool = True
    call_id: str = ""


@dataclass(frozen=True)
class ToolCalls:
    """Several calls of one model answer that need a decision: the agent runs again once all are decided."""

    calls: tuple[ToolCall, ...]
    conversation: list[dict[str, Any]] | None = field(default=None, kw_only=True)
    usage: dict[str, Any] | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class Fail:
    """The subtask has failed for good (for example, its tool call was rejected)."""

    error: str
    conversation: list[dict[str, Any]] | None = field(default=None, kw_only=True)
    usage: dict[str, Any] | None = field(default=None, kw_only=True)


Step = Finish | ToolCall | ToolCalls | Fail


class AgentError(Exception):
    """A run of an agent failed; the subtask may be retried (after at least `retry_after` seconds)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@runtime_checkable
class Agent(Protocol):
    name: str

    def run(self, context: Context) -> Step:
        """Return the next step for the subtask described by `context`."""
        ...

    def validate_input(self, task_input: dict[str, Any]) -> list[str]:
        """Return what is wrong with a subtask's input, before the plan is accepted."""
        ...


class BaseAgent:
    """Common parts of the built-in agents: a name, options from settings, no input rules."""

    description = ""

    def __init__(self, name: str, **options: Any) -> None:
        self.name = name
        self.options = options

    def validate_input(self, task_input: dict[str, Any]) -> list[str]:
        return []


def step_from_json(data: Any) -> Step:
    """Read a step sent as JSON: {"result": ...}, {"tool_call": {...}} or {"error": "..."}."""
    if not isinstance(data, dict) or len(data.keys() & {"result", "tool_call", "error"}) != 1:
        raise AgentError('Expected exactly one of "result", "tool_call" or "error" in an object.')
    if "result" in data:
        return Finish(data["result"])
    if "error" in data:
        return Fail(str(data["error"]))
    call = data["tool_call"]
    if not isinstance(call, dict) or not isinstance(call.get("tool"), str) or not call["tool"]:
        raise AgentError('A "tool_call" needs a "tool" name.')
    arguments = call.get("arguments", {})
    if not isinstance(arguments, dict):
        raise AgentError('A tool call\'s "arguments" must be an object.')
    return ToolCall(tool=call["tool"], arguments=arguments, requires_approval=bool(call.get("requires_approval", True)))
