"""MCP servers as tool sources of an openai agent: their definitions, the tools offered, what a call tells the model.

Each entry of an agent's `mcp_servers` is checked when the process starts, like every
field of the agents file; no server is contacted then.

A server's tools are offered to the model as `{server}__{tool}`, with the tool's
description and inputSchema, once per subtask (the listing is kept with the subtask's
conversation). A call's result goes back to the model as text: the structured content as
JSON when there is some, else the text contents joined by newlines; a result marked
`isError` as `Error: <text>`. Nothing here connects to a server (mcp_connections.py does),
nor imports the SDK.
"""

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from common.redaction import url_without_credentials
from execution.agents.base import AgentError
from execution.agents.fields import (
    ENV_NAME,
    TOOL_NAME,
    DefinitionError,
    check_mapping,
    check_positive,
    check_string,
    check_url,
)

if TYPE_CHECKING:
    # The SDK takes a second to import: only processes that connect to a server load it.
    from mcp import types

logger = logging.getLogger(__name__)

SEPARATOR = "__"
SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
DEFAULT_TIMEOUT_S = 30.0
SERVER_FIELDS = {
    "name",
    "url",
    "command",
    "args",
    "env",
    "headers",
    "tools",
    "requires_approval",
    "approval",
    "timeout_s",
}
# An HTTP header's name (an RFC 9110 token).
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class McpUnreachable(AgentError):
    """A server could not be started, reached or kept talking: the run fails and is retried (SPEC 3.6)."""


class McpCallFailed(Exception):
    """A call was made and failed; the message is what the model is told after "Error: "."""


@dataclass(frozen=True)
class McpServer:
    """One entry of an agent's `mcp_servers`, checked (execution/agents/definitions.py)."""

    name: str
    url: str = ""
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    # Header name -> the environment variable holding its value, read at each connection.
    headers: Mapping[str, str] = field(default_factory=dict)
    tools: tuple[str, ...] | None = None
    requires_approval: bool = True
    approval: Mapping[str, bool] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def transport(self) -> str:
        return "http" if self.url else "stdio"

    @property
    def process_key(self) -> str:
        """Return what a stdio server's process is shared by: its command, arguments and environment."""
        return json.dumps([self.command, list(self.args), sorted(self.env.items())])

    @property
    def fingerprint(self) -> str:
        """Return a short hash of what decides the tools this server lists (its address or command)."""
        what = [self.url, self.command, list(self.args), sorted(self.env.items()), self.tools]
        return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]

    def keeps(self, tool: str) -> bool:
        """Tell whether the model is offered this tool of the server (the `tools` filter)."""
        return self.tools is None or tool in self.tools

    def needs_approval(self, tool: str) -> bool:
        """Tell whether a call of this tool (its name on the server) waits for a person's decision."""
        return self.approval.get(tool, self.requires_approval)

    def header_values(self) -> dict[str, str]:
        """Return the headers to send, their values read from the environment now (McpUnreachable if one is unset)."""
        headers = {}
        for name, variable in self.headers.items():
            value = os.environ.get(variable)
            if not value:
                raise McpUnreachable(
                    f"The environment variable {variable} (header {name} of MCP server {self.name!r}) is not set."
                )
            headers[name] = value
        return headers

    def redact(self, text: str) -> str:
        """Return `text` with the values of the server's headers taken out."""
        for variable in self.headers.values():
            value = os.environ.get(variable)
            if value:
                text = text.replace(value, "[redacted]")
        return text

    def where(self) -> str:
        """Return the server's address or command, with no credentials, for messages and the API."""
        return url_without_credentials(self.url) if self.url else " ".join([self.command, *self.args])

    def describe(self) -> dict[str, Any]:
        """Return the server as GET /agents/ shows it: never a header's value, only the variables' names."""
        described: dict[str, Any] = {"name": self.name, "transport": self.transport}
        if self.url:
            described["url"] = url_without_credentials(self.url)
            described["headers"] = sorted(self.headers)
        else:
            described.update(command=self.command, args=list(self.args), env=sorted(self.env))
        described.update(
            tools_filter=list(self.tools) if self.tools is not None else None,
            requires_approval=self.requires_approval,
            approval=dict(self.approval),
            timeout_s=self.timeout_s,
        )
        return described


# --- checking a definition ------------------------------------------------------------


def mcp_servers_from_definitions(definitions: Any, *, tools: Iterable[str]) -> list[McpServer]:
    """Return the MCP servers an openai agent takes tools from; nothing is contacted here."""
    if not isinstance(definitions, list):
        raise DefinitionError("mcp_servers", 'must be a list of servers like {"name": ..., "url" | "command": ...}')
    servers: list[McpServer] = []
    for index, definition in enumerate(definitions):
        field = f"mcp_servers[{index}]"
        server = _mcp_server(field, definition)
        if any(other.name == server.name for other in servers):
            raise DefinitionError(f"{field}.name", f"{json.dumps(server.name)} is declared twice")
        clash = next((tool for tool in tools if tool.startswith(server.name + SEPARATOR)), None)
        if clash is not None:
            raise DefinitionError(f"{field}.name", f"would offer tools named like the tool {json.dumps(clash)}")
        servers.append(server)
    return servers


def _mcp_server(field: str, definition: Any) -> McpServer:
    if not isinstance(definition, dict):
        raise DefinitionError(field, 'must be an object like {"name": ..., "url" | "command": ...}')
    for key in definition:
        if key not in SERVER_FIELDS:
            raise DefinitionError(
                f"{field}.{key}", f"is not a server field (fields: {', '.join(sorted(SERVER_FIELDS))})"
            )
    name = definition.get("name")
    if not isinstance(name, str) or not SERVER_NAME.match(name):
        raise DefinitionError(f"{field}.name", "is required: 1 to 32 letters, digits, '_' or '-'")
    if ("url" in definition) == ("command" in definition):
        raise DefinitionError(
            f"{field}.url", 'or "command" is required, not both (a Streamable HTTP or a stdio server)'
        )
    fields = {f"{field}.{key}": value for key, value in definition.items()}
    url, command = check_url(fields, f"{field}.url"), check_string(fields, f"{field}.command")
    timeout_s = check_positive(fields, f"{field}.timeout_s")
    transport_only = ("args", "env") if url else ("headers",)
    for key in transport_only:
        if key in definition:
            raise DefinitionError(f"{field}.{key}", f"is for {'stdio' if url else 'Streamable HTTP'} servers only")
    tools = definition.get("tools")
    if tools is not None:
        _names(f"{field}.tools", tools, server=name)
    approval = check_mapping(f"{field}.approval", definition.get("approval", {}), bool, "true or false")
    for tool in approval:
        if tools is not None and tool not in tools:
            raise DefinitionError(f"{field}.approval.{tool}", "names a tool that its `tools` leaves out")
    requires_approval = definition.get("requires_approval", True)
    if not isinstance(requires_approval, bool):
        raise DefinitionError(f"{field}.requires_approval", "must be true or false")
    return McpServer(
        name=name,
        url=url or "",
        command=command or "",
        args=tuple(_names(f"{field}.args", definition.get("args", []), server=None)),
        env=check_mapping(f"{field}.env", definition.get("env", {}), str, "a string"),
        headers=_headers(f"{field}.headers", definition.get("headers", {})),
        tools=tuple(tools) if tools is not None else None,
        requires_approval=requires_approval,
        approval=approval,
        timeout_s=timeout_s or DEFAULT_TIMEOUT_S,
    )


def _names(field: str, values: Any, *, server: str | None) -> list[str]:
    """Check a list of strings: a server's `args`, or its `tools` (each a usable `{server}__{tool}` name)."""
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise DefinitionError(field, "must be a list of strings")
    for index, value in enumerate(values):
        if server is not None and not TOOL_NAME.match(f"{server}{SEPARATOR}{value}"):
            raise DefinitionError(
                f"{field}[{index}]", f"\"{server}{SEPARATOR}{value}\" must be 1 to 64 letters, digits, '_' or '-'"
            )
    return values


def _headers(field: str, value: Any) -> dict[str, str]:
    """Return header name -> environment variable, from values written "env:VAR" (never the secret itself)."""
    headers = {}
    for name, item in check_mapping(field, value, str, 'a reference to an environment variable, "env:VAR"').items():
        variable = item.removeprefix("env:")
        if not HEADER_NAME.match(name):
            raise DefinitionError(f"{field}.{name}", "is not a valid HTTP header name")
        if not item.startswith("env:") or not ENV_NAME.match(variable):
            raise DefinitionError(
                f"{field}.{name}", 'must be "env:VAR", the environment variable holding the value (never the value)'
            )
        headers[name] = variable
    return headers


def offered_tools(server: McpServer, listed: Iterable["types.Tool"]) -> list[dict[str, Any]]:
    """Return the listed tools the model is offered: kept by the filter, named `{server}__{tool}`, with a usable schema.

    Each entry is what the subtask keeps: {name, server, tool, description, parameters}.
    A tool whose prefixed name or schema the model's API would refuse is left out, saying so.
    """
    offered = []
    for tool in listed:
        if not server.keeps(tool.name):
            continue
        name = f"{server.name}{SEPARATOR}{tool.name}"
        problem = "" if TOOL_NAME.match(name) else "its name is not 1 to 64 letters, digits, '_' or '-'"
        problem = problem or schema_problem(tool.input_schema)
        if problem:
            logger.warning("MCP server %s: tool %r is not offered to the model: %s", server.name, tool.name, problem)
            continue
        description = tool.description or tool.title or ""
        offered.append(
            {
                "name": name,
                "server": server.name,
                "tool": tool.name,
                "description": description,
                "parameters": tool.input_schema,
            }
        )
    missing = sorted(set(server.tools or ()) - {tool.name for tool in listed})
    if missing:
        logger.warning("MCP server %s does not list the tools %s named in its `tools`", server.name, missing)
    return offered


def schema_problem(schema: Any) -> str:
    """Return why a tool's input schema cannot be offered, or "" when it can."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return 'its inputSchema does not describe an object ("type": "object")'
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as error:
        return f"its inputSchema is not a valid JSON Schema ({error.message})"
    return ""


def result_text(result: "types.CallToolResult") -> str:
    """Return what the model is told of a call's result."""
    text = "\n".join(_content_text(block) for block in result.content)
    if result.is_error:
        return f"Error: {text or 'the tool failed without saying why'}"
    if result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    return text


def _content_text(block: "types.ContentBlock") -> str:
    """Return a content block as text: text as it is, what a model cannot read (images, blobs) named only."""
    if block.type == "text":
        return block.text
    if block.type == "resource":
        resource = block.resource
        text = getattr(resource, "text", None)
        if isinstance(text, str):
            return text
        return f"[resource {resource.uri} ({resource.mime_type or 'binary'}), not shown]"
    if block.type == "resource_link":
        return f"[resource link: {block.name} {block.uri}]"
    mime_type = getattr(block, "mime_type", "") or ""
    return f"[{block.type}{f' ({mime_type})' if mime_type else ''}, not shown]"


def cut(text: str, limit: int) -> str:
    """Return `text` cut to `limit` bytes of UTF-8, marked, when it is longer."""
    data = text.encode()
    if len(data) <= limit:
        return text
    kept = data[:limit].decode(errors="ignore")
    return f"{kept}\n[truncated: the first {limit} of {len(data)} bytes (EXECUTION_MAX_RESULT_BYTES)]"
