"""The script agent: deterministic, driven by the subtask's input (demos, tests, benchmarks).

Input keys: `sleep_ms`, `fail_times` (raise on the first N attempts), `result`,
`tool_calls` (list of {tool, arguments, requires_approval=true}, asked one after another),
`echo` (finish with the whole context received).
"""

import time
from typing import Any

from execution.agents.base import AgentError, BaseAgent, Context, Fail, Finish, Step, ToolCall, ToolCallStatus

INPUT_KEYS = {"sleep_ms", "fail_times", "result", "tool_calls", "echo"}


class ScriptAgent(BaseAgent):
    description = "Deterministic agent driven by the subtask input: sleep_ms, fail_times, result, tool_calls, echo."

    def validate_input(self, task_input: dict[str, Any]) -> list[str]:
        errors = [f"Unknown script input {key!r}." for key in task_input if key not in INPUT_KEYS]
        for key in ("sleep_ms", "fail_times"):
            value = task_input.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                errors.append(f"{key} must be a non-negative integer.")
        if not isinstance(task_input.get("echo", False), bool):
            errors.append("echo must be true or false.")
        calls = task_input.get("tool_calls", [])
        if not isinstance(calls, list):
            return [*errors, "tool_calls must be a list."]
        for index, call in enumerate(calls):
            if not isinstance(call, dict) or not isinstance(call.get("tool"), str) or not call["tool"]:
                errors.append(f"tool_calls[{index}] needs a tool name.")
            elif not isinstance(call.get("arguments", {}), dict):
                errors.append(f"tool_calls[{index}].arguments must be an object.")
            elif not isinstance(call.get("requires_approval", True), bool):
                errors.append(f"tool_calls[{index}].requires_approval must be true or false.")
        return errors

    def run(self, context: Context) -> Step:
        script = context["input"]
        if script.get("sleep_ms"):
            time.sleep(script["sleep_ms"] / 1000)
        fail_times = script.get("fail_times", 0)
        if context["attempt"] <= fail_times:
            raise AgentError(f"Scripted failure on attempt {context['attempt']} (fails {fail_times} times).")

        history = context["tool_calls"]
        calls = script.get("tool_calls", [])
        for index, call in enumerate(calls):
            if index >= len(history):
                return ToolCall(
                    tool=call["tool"],
                    arguments=call.get("arguments", {}),
                    requires_approval=call.get("requires_approval", True),
                )
            if history[index]["status"] == ToolCallStatus.REJECTED:
                return Fail(
                    f"Tool call {call['tool']!r} was rejected: {history[index].get('reason') or 'no reason given'}"
                )

        if script.get("echo"):
            return Finish(context)
        result = script.get("result", f"{context['subtask_key']}: done")
        if calls:
            return Finish({"result": result, "tool_results": [entry.get("result") for entry in history]})
        return Finish(result)
