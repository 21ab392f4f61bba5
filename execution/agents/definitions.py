"""Agent definitions from EXECUTION_AGENTS_FILE: read the file, check every field, build the agents.

The file is a JSON object mapping agent names to `{"kind": ..., ...options}`. Every
field is checked when a process starts, so a mistake stops the web process or the
worker at once with a message naming the agent and the field, instead of failing a
subtask later.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from jsonschema import SchemaError
from jsonschema.validators import validator_for

from execution.agents.base import Agent
from execution.agents.fields import (
    ENV_NAME,
    TOOL_NAME,
    DefinitionError,
    check_bool,
    check_number,
    check_only,
    check_positive,
    check_string,
    check_url,
)
from execution.agents.limits import limits_from_options
from execution.agents.mcp_servers import mcp_servers_from_definitions
from execution.agents.structured_output import schema_problem
from execution.agents.tools import WORKER_TOOLS, Tool

KINDS = {
    "script": "execution.agents.script.ScriptAgent",
    "http": "execution.agents.http.HttpAgent",
    "python": "execution.agents.python.PythonAgent",
    "openai": "execution.agents.openai.OpenAIAgent",
}
# Subtask.agent holds at most this many characters.
MAX_NAME_LENGTH = 64
OPENAI_OPTIONS = {
    "base_url",
    "model",
    "api_key_env",
    "system_prompt",
    "temperature",
    "max_steps",
    "timeout_s",
    "tools",
    "mcp_servers",
    "stream",
    "output_schema",
}
TOOL_FIELDS = {"name", "description", "parameters", "requires_approval", "runs"}
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


class AgentsFileError(ImproperlyConfigured):
    """The agents file cannot be used; the message names the file, the agent and the field."""


def agents_file_read(path: str) -> dict[str, Agent]:
    """Return the agents defined in the file at `path`; raise AgentsFileError naming what is wrong."""
    where = f"EXECUTION_AGENTS_FILE {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        raise AgentsFileError(f"{where}: cannot be read ({reason}).") from None
    try:
        data = json.loads(text, object_pairs_hook=_refuse_duplicates)
    except ValueError as error:
        raise AgentsFileError(f"{where}: is not valid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise AgentsFileError(f"{where}: must be a JSON object mapping agent names to definitions.")
    agents = {}
    for name, definition in data.items():
        if not name or len(name) > MAX_NAME_LENGTH:
            raise AgentsFileError(f'{where}: agent "{name}": a name has 1 to {MAX_NAME_LENGTH} characters.')
        try:
            agents[name] = agent_from_definition(name, definition)
        except DefinitionError as error:
            raise AgentsFileError(f'{where}: agent "{name}": {error}') from None
    return agents


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f'"{duplicates[0]}" appears twice in one object')
    return dict(pairs)


def agent_from_definition(name: str, definition: Any) -> Agent:
    """Build the agent a definition describes; raise DefinitionError naming the first wrong field."""
    if not isinstance(definition, dict):
        raise DefinitionError("kind", 'is required: a definition is an object like {"kind": "openai", ...}')
    options = dict(definition)
    kind = options.pop("kind", None)
    if kind is None:
        raise DefinitionError("kind", f"is required (one of {', '.join(KINDS)})")
    if kind not in KINDS:
        raise DefinitionError("kind", f"must be one of {', '.join(KINDS)}, not {json.dumps(kind)}")
    limits = limits_from_options(kind, options)
    checked = OPTION_CHECKS[kind](options)
    agent_class = import_string(KINDS[kind])
    agent: Agent = agent_class(name, **{key: value for key, value in checked.items() if value is not None})
    agent.limits = limits  # type: ignore[attr-defined]  # any kind may be limited: not a constructor option
    return agent


# --- options of each kind --------------------------------------------------------------


def _script(options: dict[str, Any]) -> dict[str, Any]:
    check_only(options, set())
    return {}


def _http(options: dict[str, Any]) -> dict[str, Any]:
    check_only(options, {"url", "timeout_s"})
    return {"url": check_url(options, "url", required=True), "timeout_s": check_positive(options, "timeout_s")}


def _python(options: dict[str, Any]) -> dict[str, Any]:
    check_only(options, {"callable"})
    path = check_string(options, "callable", required=True) or ""
    try:
        function = import_string(path)
    except ImportError as error:
        raise DefinitionError("callable", f"cannot be imported ({error})") from None
    if not callable(function):
        raise DefinitionError("callable", f"{json.dumps(path)} is not callable")
    return {"callable": path}


def _openai(options: dict[str, Any]) -> dict[str, Any]:
    check_only(options, OPENAI_OPTIONS)
    api_key_env = check_string(options, "api_key_env")
    if api_key_env is not None and not ENV_NAME.match(api_key_env):
        raise DefinitionError("api_key_env", "must be the name of an environment variable (letters, digits, _)")
    tools = tools_from_definitions(options.get("tools", []))
    return {
        "base_url": check_url(options, "base_url", required=True),
        "model": check_string(options, "model", required=True),
        "api_key_env": api_key_env,
        "system_prompt": check_string(options, "system_prompt", empty=True),
        "temperature": check_number(options, "temperature", minimum=0, maximum=2),
        "max_steps": check_number(options, "max_steps", minimum=1, integer=True),
        "timeout_s": check_positive(options, "timeout_s"),
        "tools": tools,
        "mcp_servers": mcp_servers_from_definitions(
            options.get("mcp_servers", []), tools=[tool.name for tool in tools]
        ),
        "stream": check_bool(options, "stream"),
        "output_schema": _output_schema(options),
    }


def _output_schema(options: dict[str, Any]) -> dict[str, Any] | None:
    schema = options.get("output_schema")
    if schema is None:
        return None
    problem = schema_problem(schema)
    if problem:
        raise DefinitionError("output_schema", problem)
    return cast(dict[str, Any], schema)


OPTION_CHECKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "script": _script,
    "http": _http,
    "python": _python,
    "openai": _openai,
}


# --- tools ---------------------------------------------------------------------------


def tools_from_definitions(definitions: Any) -> list[Tool]:
    """Return the tools an openai agent declares, worker tools completed with their built-in schema."""
    if not isinstance(definitions, list):
        raise DefinitionError("tools", "must be a list of tool definitions")
    tools: list[Tool] = []
    for index, definition in enumerate(definitions):
        tool = _tool(f"tools[{index}]", definition)
        if any(other.name == tool.name for other in tools):
            raise DefinitionError(f"tools[{index}].name", f"{json.dumps(tool.name)} is declared twice")
        tools.append(tool)
    return tools


def _tool(field: str, definition: Any) -> Tool:
    if not isinstance(definition, dict):
        raise DefinitionError(field, 'must be an object like {"name": ..., "parameters": {...}}')
    for key in definition:
        if key not in TOOL_FIELDS:
            raise DefinitionError(f"{field}.{key}", f"is not a tool field (fields: {', '.join(sorted(TOOL_FIELDS))})")
    name = definition.get("name")
    if name is None:
        raise DefinitionError(f"{field}.name", "is required")
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise DefinitionError(f"{field}.name", "must be 1 to 64 letters, digits, '_' or '-'")
    runs = definition.get("runs", "client")
    if runs not in ("client", "worker"):
        raise DefinitionError(f"{field}.runs", f'must be "client" or "worker", not {json.dumps(runs)}')
    requires_approval = definition.get("requires_approval", True)
    if not isinstance(requires_approval, bool):
        raise DefinitionError(f"{field}.requires_approval", "must be true or false")
    description = definition.get("description")
    if description is not None and not isinstance(description, str):
        raise DefinitionError(f"{field}.description", "must be a string")
    if runs == "worker":
        return _worker_tool(field, name, description, requires_approval, definition)
    if not requires_approval:
        raise DefinitionError(
            f"{field}.requires_approval",
            'must be true for a client tool: its result comes with the approval (only "runs": "worker" tools '
            "run without one)",
        )
    parameters = definition.get("parameters", NO_PARAMETERS)
    _check_schema(f"{field}.parameters", parameters)
    return Tool(name=name, description=description or "", parameters=parameters, requires_approval=True)


def _worker_tool(field: str, name: str, description: str | None, requires_approval: bool, definition: dict) -> Tool:
    builtin = WORKER_TOOLS.get(name)
    if builtin is None:
        raise DefinitionError(
            f"{field}.name", f"{json.dumps(name)} is not a built-in worker tool ({', '.join(WORKER_TOOLS)})"
        )
    # The model is shown the parameters given (or the built-in ones); the arguments are
    # always checked against the built-in schema, which is what the tool reads.
    parameters = definition.get("parameters", builtin.parameters)
    _check_schema(f"{field}.parameters", parameters)
    return Tool(
        name=name,
        description=description or builtin.description,
        parameters=parameters,
        requires_approval=requires_approval,
        runs="worker",
    )


def _check_schema(field: str, schema: Any) -> None:
    if not isinstance(schema, dict):
        raise DefinitionError(field, "must be a JSON Schema (an object)")
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as error:
        where = "/".join(str(part) for part in error.path)
        raise DefinitionError(
            field, f"is not a valid JSON Schema ({error.message}{f' at {where}' if where else ''})"
        ) from None
    if schema.get("type") != "object":
        raise DefinitionError(field, 'must describe an object ("type": "object"): tool arguments are an object')
