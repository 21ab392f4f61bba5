"""The openai agent: a language model behind any OpenAI-compatible Chat Completions endpoint.

One run calls the model (`POST {base_url}/chat/completions`, tools as functions) until
it answers without tool calls (Finish), asks for tool calls that need a person's decision
(ToolCalls), or something fails. Calls are streamed unless the option `stream` is false:
the answer's text goes out live as it arrives (execution/deltas.py) and the stream is read
back into the completion an unstreamed call answers (openai_stream.py). With an
`output_schema` (or the subtask's `input.output_schema`) the final answer must be JSON
matching it (structured_output.py). The whole conversation travels with
every step, and the next run rebuilds it from the context: the tool calls of the last
answer are then answered from their decisions (matched by tool_call_id) before the model
is called again, so a resume can run on any worker after any restart.

Its tools are its own (client and worker tools) and those of its MCP servers, listed
when the subtask first calls the model (run_tools.py). A worker or MCP call that needs
no approval runs at once; one that does runs only once approved, with the approved
(possibly edited) arguments, and a rejected one never runs.

Retries are the engine's: connection errors, timeouts, 5xx and 429 raise AgentError
(with the 429's Retry-After); other answers that cannot be used fail the subtask. The
API key is read from the environment for each run and goes only into the request.
"""

import copy
import json
import os
from collections.abc import Iterable
from typing import Any, cast

import httpx
from django.conf import settings
from openai import APIConnectionError, APIStatusError, APITimeoutError, OpenAI, OpenAIError

from common.redaction import url_without_credentials
from execution.agents.base import (
    AgentError,
    BaseAgent,
    Context,
    Fail,
    Finish,
    Step,
    ToolCall,
    ToolCalls,
    call_gated,
    retry_after_seconds,
)
from execution.agents.limits import agent_limits
from execution.agents.mcp_servers import McpServer
from execution.agents.openai_stream import completion_from_stream
from execution.agents.run_tools import RunTools, argument_problem, mcp_load, parse_arguments, run_tools
from execution.agents.structured_output import (
    correction_text,
    is_correction,
    output_problem,
    response_format,
    schema_of,
    schema_problem,
)
from execution.agents.tools import Tool
from execution.deltas import DeltaPublisher, delta_publisher
from execution.limits import model_call_admit

DEFAULT_MAX_STEPS = 20
DEFAULT_TIMEOUT_S = 120.0
# Local servers (Ollama, llama.cpp, vLLM) ignore the key, but the client needs one; an
# explicit placeholder also keeps the client from sending OPENAI_API_KEY to them.
LOCAL_API_KEY = "no-key"
BODY_EXCERPT = 500


class _Refused(Exception):
    """The run cannot go on and retrying will not help: the subtask fails with this message."""


class _TooLarge(_Refused):
    """The conversation grew past EXECUTION_MAX_CONVERSATION_BYTES: the subtask fails, and it is not stored."""


class OpenAIAgent(BaseAgent):
    """A language model that calls tools; the calls that need approval pause the subtask."""

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        model: str,
        api_key_env: str = "",
        system_prompt: str = "",
        temperature: float | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        tools: Iterable[Tool] = (),
        mcp_servers: Iterable[McpServer] = (),
        stream: bool = True,
        output_schema: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.system_prompt = system_prompt
        self.temperature = temperature
        self.max_steps = max_steps
        self.timeout_s = timeout_s
        self.tools = {tool.name: tool for tool in tools}
        self.mcp_servers = list(mcp_servers)
        self.stream = stream
        self.output_schema = output_schema
        if self.mcp_servers:
            mcp_load()
        self.endpoint = f"POST {url_without_credentials(self.base_url)}/chat/completions"
        listed = ", ".join(
            f"{tool.name} ({tool.runs}{', approval' if tool.requires_approval else ''})" for tool in self.tools.values()
        )
        servers = ", ".join(f"{server.name} ({server.transport})" for server in self.mcp_servers)
        self.description = (
            f"A language model ({model} at {url_without_credentials(self.base_url)}) with tools: {listed or 'none'}"
            f"{f'; MCP servers: {servers}' if servers else ''}."
        )

    def validate_input(self, task_input: dict[str, Any]) -> list[str]:
        if "output_schema" not in task_input:
            return []
        problem = schema_problem(task_input["output_schema"])
        return [f"input.output_schema {problem}."] if problem else []

    def run(self, context: Context) -> Step:
        conversation: list[dict[str, Any]] = copy.deepcopy(list(context.get("conversation") or []))
        usage = _usage(context.get("usage"))
        state = context.get("agent_state") or {}
        schema = schema_of(context.get("input"), self.output_schema)
        live = delta_publisher(context)
        try:
            # The MCP servers are listed at the subtask's first model call, and its HTTP
            # sessions last as long as this run.
            with run_tools(
                agent=self.name, own=self.tools, servers=self.mcp_servers, state=state, first_call=not conversation
            ) as tools:
                if conversation:
                    self._settle(conversation, context.get("tool_calls") or [], tools)
                else:
                    conversation = self._opening(context)
                client = OpenAI(base_url=self.base_url, api_key=self._api_key(), timeout=self.timeout_s, max_retries=0)
                with client:
                    answer = _Answer(schema=schema, live=live)
                    return self._converse(client, conversation, usage, tools, answer, context)
        except _TooLarge as error:
            return Fail(str(error), usage=usage)
        except _Refused as error:
            return Fail(self._redact(str(error)), conversation=conversation, usage=usage)

    # --- the conversation --------------------------------------------------------------

    def _opening(self, context: Context) -> list[dict[str, Any]]:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*messages, {"role": "user", "content": opening_text(context)}]

    def _converse(
        self,
        client: OpenAI,
        conversation: list[dict[str, Any]],
        usage: dict[str, Any],
        tools: RunTools,
        answer: "_Answer",
        context: Context,
    ) -> Step:
        while True:
            conversation_bound(conversation)
            if len(usage["steps"]) >= self.max_steps:
                raise _Refused(self._too_many_steps())
            completion = self._complete(client, conversation, tools, answer, step=len(usage["steps"]))
            message = assistant_message(completion["choices"][0]["message"], step=len(usage["steps"]))
            _add_step(usage, completion, self.model)
            tool_calls_bound(message)
            conversation.append(message)
            conversation_bound(conversation)
            if not message.get("tool_calls"):
                content = message.get("content") or ""
                result: dict[str, Any] = {
                    "content": content,
                    "model": completion.get("model") or self.model,
                    "steps": len(usage["steps"]),
                    "usage": {key: usage[key] for key in ("prompt_tokens", "completion_tokens")},
                }
                if answer.schema is not None:
                    output, problem = output_problem(content, answer.schema)
                    if problem:
                        # One corrective round: a second answer that does not fit fails the subtask.
                        if is_correction(conversation[-2]):
                            raise _Refused(
                                f"The model's answer does not match output_schema after a correction: {problem}"
                            )
                        conversation.append({"role": "user", "content": correction_text(problem)})
                        continue
                    result["output"] = output
                return Finish(result, conversation=conversation, usage=usage, state=tools.state())
            if len(usage["steps"]) >= self.max_steps:
                # The model could not be told the calls' outcome: fail now rather than ask a person.
                raise _Refused(self._too_many_steps())
            pending = self._answer_calls(conversation, message["tool_calls"], tools, context)
            if pending:
                conversation_bound(conversation)
                return ToolCalls(tuple(pending), conversation=conversation, usage=usage, state=tools.state())

    def _too_many_steps(self) -> str:
        return f"The model did not finish within max_steps={self.max_steps} model calls; no more calls are made."

    def _answer_calls(
        self, conversation: list[dict[str, Any]], calls: list[dict[str, Any]], tools: RunTools, context: Context
    ) -> list[ToolCall]:
        """Answer at once the calls that need no person (and that no rule gates); return those that need a decision."""
        pending = []
        for call in calls:
            name, raw = call["function"]["name"], call["function"]["arguments"]
            tool = tools.get(name)
            if tool is None:
                message = f"Error: there is no tool {name!r} (tools: {tools.names()})."
                conversation.append(tool_message(call["id"], message))
                continue
            arguments, problem = parse_arguments(tool, raw)
            if problem:
                conversation.append(tool_message(call["id"], f"Error: {problem}"))
            elif tool.requires_approval or call_gated(context, name, arguments):
                pending.append(ToolCall(tool=name, arguments=arguments, requires_approval=True, call_id=call["id"]))
            else:
                conversation.append(tool_message(call["id"], tools.run(tool, arguments)))
        return pending

    def _settle(self, conversation: list[dict[str, Any]], history: list[dict[str, Any]], tools: RunTools) -> None:
        """Answer the last answer's calls that have no tool message yet from their decisions."""
        last = next(
            (i for i in range(len(conversation) - 1, -1, -1) if conversation[i].get("role") == "assistant"), None
        )
        if last is None or not conversation[last].get("tool_calls"):
            return
        calls = conversation[last]["tool_calls"]
        answered = {message.get("tool_call_id") for message in conversation[last + 1 :]}
        decisions = {entry.get("call_id"): entry for entry in history if entry.get("call_id")}
        for call in calls:
            if call["id"] in answered:
                continue
            entry = decisions.get(call["id"])
            if entry is None or entry.get("status") not in ("approved", "rejected"):
                raise _Refused(
                    f"The model's call of {call['function']['name']!r} ({call['id']}) has no decision to resume with."
                )
            conversation.append(tool_message(call["id"], self._outcome(entry, tools)))
        # One tool message per call, in the order of the calls.
        order = {call["id"]: index for index, call in enumerate(calls)}
        conversation[last + 1 :] = sorted(
            conversation[last + 1 :], key=lambda message: order.get(message.get("tool_call_id"), len(order))
        )

    def _outcome(self, entry: dict[str, Any], tools: RunTools) -> str:
        """Return what the model is told about a decided call; a worker or MCP tool runs now, after its approval."""
        if entry["status"] == "rejected":
            return f"The call was rejected: {entry.get('reason') or 'no reason given'}"
        original = entry.get("arguments")
        approved = entry.get("approved_arguments")
        if approved is None:
            approved = original
        tool = tools.get(entry.get("tool", ""))
        if tool is not None and tool.runs != "client":
            problem = argument_problem(tool, approved)
            outcome = f"Error: {problem}" if problem else tools.run(tool, cast(dict[str, Any], approved))
        else:
            outcome = result_text(entry.get("result"))
        if approved != original:
            return f"The approver edited the arguments to {json.dumps(approved, ensure_ascii=False)}. Result: {outcome}"
        return outcome

    # --- the endpoint ------------------------------------------------------------------

    def _api_key(self) -> str:
        if not self.api_key_env:
            return LOCAL_API_KEY
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise _Refused(f"The environment variable {self.api_key_env} (api_key_env) is not set.")
        return key

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        return text.replace(key, "[redacted]") if key else text

    def _complete(
        self, client: OpenAI, conversation: list[dict[str, Any]], tools: RunTools, answer: "_Answer", *, step: int
    ) -> dict[str, Any]:
        """Return the model's chat completion (a dict) for the conversation so far."""
        # Each call counts against requests_per_minute and waits out a Retry-After shared by the agent's runs.
        model_call_admit(agent=self.name, limits=agent_limits(self), deadline_s=self.timeout_s)
        options: dict[str, Any] = {"model": self.model, "messages": cast(Any, conversation)}
        functions = tools.functions()
        if functions:
            options["tools"] = functions
        if self.temperature is not None:
            options["temperature"] = self.temperature
        if answer.schema is not None:
            options["response_format"] = response_format(answer.schema)
        try:
            if self.stream:
                return self._streamed(client, options, answer.live, step=step)
            raw = client.chat.completions.with_raw_response.create(**options)
        except APITimeoutError:
            # `from None` everywhere: the client's exceptions carry the response, kept out of logs.
            raise AgentError(f"{self.endpoint} timed out after {self.timeout_s}s.") from None
        except APIConnectionError as error:
            raise AgentError(self._redact(f"{self.endpoint} failed: {error.__cause__ or error}")) from None
        except APIStatusError as error:
            status = error.status_code
            message = self._redact(f"{self.endpoint} answered {status}: {error.response.text[:BODY_EXCERPT]}")
            if status == 429:
                retry_after = retry_after_seconds(error.response.headers.get("retry-after"))
                raise AgentError(message, retry_after=retry_after) from None
            if status >= 500:
                raise AgentError(message) from None
            raise _Refused(message) from None
        except OpenAIError as error:
            raise _Refused(self._redact(f"{self.endpoint} could not be used: {error}")) from None
        return self._unstreamed(raw.text)

    def _streamed(self, client: OpenAI, options: dict[str, Any], live: DeltaPublisher, *, step: int) -> dict[str, Any]:
        """Return the completion of a streamed call, its text sent live as it arrives (the errors are _complete's)."""
        stream = client.chat.completions.create(**options, stream=True, stream_options={"include_usage": True})
        live.start(step)
        with stream:
            try:
                if "text/event-stream" not in stream.response.headers.get("content-type", ""):
                    # A server that ignores `stream` answers in one piece: read it as such.
                    completion = self._unstreamed(stream.response.read().decode("utf-8", errors="replace"))
                    live.add(str(completion["choices"][0]["message"].get("content") or ""))
                else:
                    chunks = (chunk.to_dict() for chunk in stream)
                    completion = completion_from_stream(chunks, on_text=live.add, endpoint=self.endpoint)
            except (OpenAIError, httpx.HTTPError) as error:
                # The call was accepted and broke off (a cut connection, an error event mid-stream): retried.
                raise AgentError(self._redact(f"{self.endpoint} broke off its stream: {error}")) from None
        live.flush()
        if not is_chat_completion(completion):
            raise _Refused(self._redact(f"{self.endpoint} streamed something that is not a chat completion."))
        return completion

    def _unstreamed(self, text: str) -> dict[str, Any]:
        """Return a chat completion answered in one piece; refuse anything else."""
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not is_chat_completion(data):
            raise _Refused(
                self._redact(f"{self.endpoint} answered something that is not a chat completion: {text[:BODY_EXCERPT]}")
            )
        return cast(dict[str, Any], data)


class _Answer:
    """What shapes each model call of one run: the output schema, and where the live text goes."""

    def __init__(self, *, schema: dict[str, Any] | None, live: DeltaPublisher) -> None:
        self.schema = schema
        self.live = live


# --- bounds ----------------------------------------------------------------------------


def conversation_bound(conversation: list[dict[str, Any]]) -> None:
    """Raise _TooLarge when the conversation (as JSON) is over EXECUTION_MAX_CONVERSATION_BYTES."""
    limit = settings.EXECUTION_MAX_CONVERSATION_BYTES
    size = len(json.dumps(conversation, ensure_ascii=False, default=str).encode())
    if size > limit:
        raise _TooLarge(
            f"The conversation with the model grew to {size} bytes, over the limit of {limit} "
            "(EXECUTION_MAX_CONVERSATION_BYTES); it is not stored and no more calls are made."
        )


def tool_calls_bound(message: dict[str, Any]) -> None:
    """Raise _Refused, before any runs, when one answer asks for more than EXECUTION_MAX_TOOL_CALLS_PER_ANSWER calls."""
    limit = settings.EXECUTION_MAX_TOOL_CALLS_PER_ANSWER
    count = len(message.get("tool_calls") or [])
    if count > limit:
        raise _Refused(
            f"The model asked for {count} tool calls in one answer, over the limit of {limit} "
            "(EXECUTION_MAX_TOOL_CALLS_PER_ANSWER); none was run."
        )


# --- messages --------------------------------------------------------------------------


def opening_text(context: Context) -> str:
    """Return the first user message: the plan's goal, the subtask, its input, its dependencies' results."""
    parts = [
        f"Goal of the plan: {context.get('plan_goal', '')}",
        f"Your task ({context.get('subtask_key', '')}): {context.get('description', '')}",
    ]
    if context.get("input"):
        parts.append(f"Input:\n{readable(context['input'])}")
    dependencies = context.get("dependencies") or {}
    if dependencies:
        lines = ["Results of the tasks this one depends on:"]
        for key, dependency in dependencies.items():
            lines.append(f"- {key} ({dependency.get('description', '')}):\n{readable(dependency.get('result'))}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def readable(value: Any) -> str:
    """Return text as it is and anything else as indented JSON."""
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False, default=str)


def result_text(result: Any) -> str:
    """Return the result sent with an approval as the tool message's text."""
    if result is None:
        return "Approved; no result was sent with the approval."
    return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)


def tool_message(call_id: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def assistant_message(message: dict[str, Any], *, step: int) -> dict[str, Any]:
    """Return the model's message as a plain Chat Completions message, with an id on every call."""
    content = message.get("content")
    if isinstance(content, list):  # some servers answer in content parts
        content = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    result: dict[str, Any] = {"role": "assistant", "content": content}
    calls: list[dict[str, Any]] = []
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        arguments = function.get("arguments")
        if not isinstance(arguments, str):  # some servers send the arguments as an object
            arguments = json.dumps(arguments if arguments is not None else {})
        # Decisions are matched to calls by id: make sure each call has its own.
        call_id = call.get("id") or f"call_{step}_{index}"
        if any(other["id"] == call_id for other in calls):
            call_id = f"{call_id}_{index}"
        calls.append(
            {"id": call_id, "type": "function", "function": {"name": function["name"], "arguments": arguments}}
        )
    if calls:
        result["tool_calls"] = calls
    return result


def is_chat_completion(data: Any) -> bool:
    """Tell whether a response body has the shape of a chat completion this agent can read."""
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
        return False
    choice = data["choices"][0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict) or not isinstance(message.get("content"), str | list | None):
        return False
    calls = message.get("tool_calls")
    if calls is None:
        return True
    return isinstance(calls, list) and all(
        isinstance(call, dict)
        and isinstance(call.get("function"), dict)
        and isinstance(call["function"].get("name"), str)
        and isinstance(call.get("id", ""), str | None)
        for call in calls
    )


# --- usage -----------------------------------------------------------------------------


def _usage(stored: Any) -> dict[str, Any]:
    steps = list(stored.get("steps") or []) if isinstance(stored, dict) else []
    return {
        "prompt_tokens": sum(step.get("prompt_tokens", 0) for step in steps),
        "completion_tokens": sum(step.get("completion_tokens", 0) for step in steps),
        "steps": steps,
    }


def _add_step(usage: dict[str, Any], completion: dict[str, Any], model: str) -> None:
    counts = completion.get("usage")
    if not isinstance(counts, dict):
        counts = {}
    step = {
        key: value if isinstance(value := counts.get(key), int) and not isinstance(value, bool) else 0
        for key in ("prompt_tokens", "completion_tokens")
    }
    usage["steps"].append({**step, "model": completion.get("model") or model})
    usage["prompt_tokens"] += step["prompt_tokens"]
    usage["completion_tokens"] += step["completion_tokens"]
