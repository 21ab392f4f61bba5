"""The agent contract: a context in, one step out (a result, tool calls, or a failure).

An agent is called once per run of a subtask. It returns the next step; raising any
exception means "this attempt failed, try again" (with backoff, up to max_retries),
while returning Fail means "this subtask has failed" (no retry).

Every step may carry the agent's state for the engine to store with the subtask:
`conversation` (the agent's whole message list; None leaves the stored one unchanged),
`usage` (the subtask's cumulative usage) and `state` (anything else the agent keeps
between runs, such as the MCP tools it offered its model). The next run finds them in
the context as `conversation` ([] at first), `usage` ({} at first) and `agent_state`
({} at first), so a resume can run on any worker after any restart.
"""

import math
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Protocol, TypedDict, runtime_checkable

Context = dict[str, Any]

# The longest tool name an agent may ask for (an approval stores it in a column this long).
TOOL_NAME_MAX_LENGTH = 255


class ToolCallStatus(StrEnum):
    AUTO = "auto"  # needed no approval: noted, and the agent went on at once
    PENDING = "pending"  # waits for a decision
    APPROVED = "approved"
    REJECTED = "rejected"  # rejected, or expired (reason "expired")


class ToolCallEntry(TypedDict, total=False):
    """An entry of the context's `tool_calls`: a call the agent asked for, oldest first, with its decision.

    The engine stores the history with the subtask (Subtask.tool_calls) and writes the
    entries (execution/engine/waits.py); every run reads it back.
    """

    tool: str
    arguments: dict[str, Any]
    requires_approval: bool
    status: str
    result: Any
    call_id: str
    approval_id: str
    approved_arguments: dict[str, Any] | None
    reason: str
    decided_by: str
    decided_at: str


@dataclass(frozen=True)
class Finish:
    """The subtask is done with this result."""

    result: Any
    _: KW_ONLY
    conversation: list[dict[str, Any]] | None = None
    usage: dict[str, Any] | None = None
    state: dict[str, Any] | None = None


@dataclass(frozen=True)
class ToolCall:
    """The agent wants this tool called; with requires_approval a human decides first.

    `call_id` is the model's id for the call (its tool_call_id), so the decision can be
    matched to the call when the agent is called again.
    """

    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)
    requires_approval: bool = True
    call_id: str = ""
    _: KW_ONLY
    conversation: list[dict[str, Any]] | None = None
    usage: dict[str, Any] | None = None
    state: dict[str, Any] | None = None


@dataclass(frozen=True)
class ToolCalls:
    """Several calls of one model answer that each need a decision.

    The engine asks for one approval per call; the agent is called again only when
    every call of the answer is decided.
    """

    calls: tuple[ToolCall, ...]
    _: KW_ONLY
    conversation: list[dict[str, Any]] | None = None
    usage: dict[str, Any] | None = None
    state: dict[str, Any] | None = None


@dataclass(frozen=True)
class Fail:
    """The subtask has failed for good (for example, its tool call was rejected)."""

    error: str
    _: KW_ONLY
    conversation: list[dict[str, Any]] | None = None
    usage: dict[str, Any] | None = None
    state: dict[str, Any] | None = None


Step = Finish | ToolCall | ToolCalls | Fail
STEP_TYPES = (Finish, ToolCall, ToolCalls, Fail)


class AgentError(Exception):
    """A run of an agent failed; the subtask may be retried.

    `retry_after` (seconds) is how long the other side asked us to wait (a 429's
    Retry-After); the engine waits at least that long before the next attempt.
    """

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
    requires_approval = call.get("requires_approval", True)
    if not isinstance(requires_approval, bool):
        raise AgentError('A tool call\'s "requires_approval" must be true or false.')
    return ToolCall(tool=call["tool"], arguments=arguments, requires_approval=requires_approval)


def retry_after_seconds(value: str | None) -> float | None:
    """Return a Retry-After header's delay in seconds (the header is a number or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


# --- Rules over calls an agent would make without asking --------------------------------------
# An approval rule (APPROVALS_POLICY_FILE) may gate a call its agent marked as needing no
# approval. Agents that run such calls themselves (an `openai` agent's worker and MCP tools)
# ask here first; the engine asks for the calls it is handed. The approvals app sets the
# check through the engine's gate when Django starts (execution/engine/approval_gate.py).

CallCheck = Callable[[Context, str, dict[str, Any]], bool]
_call_check: CallCheck | None = None


def call_check_set(check: CallCheck | None) -> None:
    """Make `check(context, tool, arguments)` the one that says whether a rule gates a call."""
    global _call_check
    _call_check = check


def call_gated(context: Context, tool: str, arguments: dict[str, Any]) -> bool:
    """Return whether a rule asks a person about (or denies) a call the agent would make without approval."""
    return _call_check is not None and _call_check(context, tool, arguments)
