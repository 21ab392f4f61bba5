"""Contexts and decisions as the engine passes them to agents, built by hand for the openai agent's tests.

The tests play the engine: they build the context of a run, store what a step returns
(through JSON, as the jsonb column does) and decide the tool calls it asked for.
"""

import json

WRITE_FILE = {
    "name": "write_file",
    "description": "Write a file of the project.",
    "parameters": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"],
        "additionalProperties": False,
    },
}
RUN_COMMAND = {
    "name": "run_command",
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
}
READ_FILE = {"name": "read_file", "runs": "worker", "requires_approval": False}
TOOLS = [WRITE_FILE, RUN_COMMAND, READ_FILE]
LOGIN = {"path": "lib/login.dart", "content": "class Login {}"}


def context(**extra):
    return {
        "plan_id": "plan-1",
        "plan_goal": "Build a to-do app",
        "plan_metadata": {},
        "session_id": "",
        "subtask_id": "subtask-1",
        "subtask_key": "login",
        "description": "Write the login screen",
        "agent": "coder",
        "input": {"framework": "flutter"},
        "attempt": 1,
        "dependencies": {"init": {"description": "Create the project", "result": "todo_app created", "agent": "coder"}},
        "tool_calls": [],
        "execution_mode": "subtask",
        "conversation": [],
        "usage": {},
        "agent_state": {},
        **extra,
    }


def stored(value):
    """Return a value as it comes back from a PostgreSQL jsonb column."""
    return json.loads(json.dumps(value))


def approved(result=None, arguments=None):
    return {"status": "approved", "result": result, "approved_arguments": arguments, "reason": ""}


def rejected(reason):
    return {"status": "rejected", "result": None, "approved_arguments": None, "reason": reason}


def resumed(previous, step, *decisions):
    """Return the next run's context: the step's state stored and each of its calls decided."""
    calls = list(previous["tool_calls"])
    for call, decision in zip(step.calls, decisions, strict=True):
        calls.append(
            {
                "tool": call.tool,
                "arguments": call.arguments,
                "requires_approval": True,
                **decision,
                "approved_arguments": (decision["approved_arguments"] or call.arguments)
                if decision["status"] == "approved"
                else None,
                "decided_by": "alice",
                "decided_at": "2025-01-01T00:00:00+00:00",
                "approval_id": f"approval-{call.call_id}",
                "call_id": call.call_id,
            }
        )
    return {
        **previous,
        "attempt": previous["attempt"] + 1,
        "tool_calls": stored(calls),
        "conversation": stored(step.conversation),
        "usage": stored(step.usage),
        "agent_state": stored(step.state) if step.state is not None else previous.get("agent_state", {}),
    }


def last_messages(request, count):
    return request["body"]["messages"][-count:]
