"""Calling an agent until it returns a step the engine acts on, and checking that step before it is stored.

An agent may return anything; what is not a step, a result that is not JSON, a result
over EXECUTION_MAX_RESULT_BYTES, or one PostgreSQL cannot store (a NUL character, a lone
surrogate) ends the subtask with an error naming the problem, instead of crashing the
worker on the write (which would look like a lost run, then poison).
"""

import dataclasses
import json
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from execution.agents.base import STEP_TYPES, Agent, Fail, Finish, Step, ToolCall, ToolCalls
from execution.tool_calls import TOOL_NAME_MAX_LENGTH, ToolCallEntry, ToolCallStatus, entry_new
from plans.json_values import json_problem, storable_text, text_problem
from plans.shape import MAX_BODY_DEPTH

MAX_AUTO_TOOL_CALLS = 100


def call_agent(agent: Agent | None, name: str, context: dict[str, Any], history: list[ToolCallEntry]) -> Step:
    """Call the agent until it returns a result, a failure, or tool calls that need approval.

    A call that needs no approval is noted in `history` (status "auto"), which the caller
    stores whatever happens next, and the agent is called again at once.
    """
    if agent is None:
        return Fail(f"Agent {name!r} is not registered.")
    for _ in range(MAX_AUTO_TOOL_CALLS):
        step = agent.run({**context, "tool_calls": list(history)})
        problem = step_problem(step)
        if problem:
            return Fail(problem)
        if isinstance(step, Fail):
            # The agent's own words, kept: only what PostgreSQL cannot store is written out.
            return dataclasses.replace(step, error=storable_text(step.error))
        if not isinstance(step, ToolCall) or step.requires_approval:
            return step
        history.append(
            entry_new(tool=step.tool, arguments=step.arguments, status=ToolCallStatus.AUTO, call_id=step.call_id)
        )
    return Fail(f"The agent made more than {MAX_AUTO_TOOL_CALLS} tool calls without approval in a row.")


def step_problem(step: Any) -> str:
    """Return what is wrong with what an agent returned, or "" for a step the engine can act on."""
    if not isinstance(step, STEP_TYPES):
        return f"The agent returned {type(step).__name__}, not a step (Finish, Fail, ToolCall or ToolCalls)."
    for name in ("conversation", "usage", "state"):
        state = getattr(step, name, None)
        problem = _json_problem(name, state, limit=None) if state is not None else ""
        if problem:
            return problem
    if isinstance(step, Finish):
        return _json_problem("result", step.result, limit=settings.EXECUTION_MAX_RESULT_BYTES)
    if isinstance(step, Fail):
        return (
            "" if isinstance(step.error, str) else f"The agent failed with a {type(step.error).__name__}, not a text."
        )
    calls = step.calls if isinstance(step, ToolCalls) else [step] if isinstance(step, ToolCall) else []
    if isinstance(step, ToolCalls) and not step.calls:
        return "The agent asked for no tool calls (an empty ToolCalls)."
    for call in calls:
        if not isinstance(call, ToolCall) or not isinstance(call.tool, str) or not call.tool:
            return "The agent asked for a tool call without a tool name."
        if len(call.tool) > TOOL_NAME_MAX_LENGTH or text_problem(call.tool):
            return f"The agent asked for a tool whose name is not a text of at most {TOOL_NAME_MAX_LENGTH} characters."
        if not isinstance(call.arguments, dict):
            return f"The arguments of tool call {call.tool!r} are not an object."
        problem = _json_problem(f"arguments of tool call {call.tool!r}", call.arguments, limit=None)
        if problem:
            return problem
    return ""


def _json_problem(what: str, value: Any, *, limit: int | None) -> str:
    try:
        size = len(json.dumps(value, cls=DjangoJSONEncoder, allow_nan=False).encode())
    except (TypeError, ValueError, RecursionError) as error:
        return f"The agent's {what} is not JSON-serialisable ({type(error).__name__}: {error})."
    if limit is not None and size > limit:
        return f"The agent's {what} is {size} bytes, over the limit of {limit} (EXECUTION_MAX_RESULT_BYTES)."
    problem = json_problem(value, max_depth=MAX_BODY_DEPTH)
    if problem:
        return f"The agent's {what} cannot be stored: {problem[0].lower()}{problem[1:]}"
    return ""
