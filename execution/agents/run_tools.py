"""The tools of one run of an openai agent: its own, and those of its MCP servers as listed for the subtask.

The MCP servers are listed when the subtask first calls its model; what the model was
offered is kept with the subtask (the step's `state`, `{"mcp_tools": [...]}`), so every
later run, on any worker, offers the same tools. Whether a call needs a person's approval
is read from the agent's definition at each run. Running a tool here means a worker tool
or an MCP call (a client tool's result comes with its approval): the answer is the text
the model is told, a failure included (`Error: ...`); a server that cannot be reached
raises AgentError (McpUnreachable), so the run is retried.
"""

import importlib
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from jsonschema import ValidationError
from jsonschema.validators import validator_for

from execution.agents.mcp_servers import McpCallFailed, McpServer, cut, offered_tools, result_text
from execution.agents.tools import WORKER_TOOLS, Tool, ToolError, worker_tool_run
from execution.models import McpListing

if TYPE_CHECKING:
    from execution.agents.mcp_connections import McpSessions

logger = logging.getLogger(__name__)

STATE_KEY = "mcp_tools"


def mcp_load() -> Any:
    """Return the module that talks to MCP servers, importing it (and the SDK) now.

    Deliberately imported on demand: the SDK takes about a second to import, which
    processes whose agents have no MCP server (the web process of most setups, every
    command) should not pay. Agents with servers call this when they are built, so a
    worker's pool processes share the import made before they fork.
    """
    return importlib.import_module("execution.agents.mcp_connections")


class RunTools:
    """Every tool the model may call in this run, and how each is run."""

    def __init__(
        self,
        *,
        own: Mapping[str, Tool],
        servers: Mapping[str, McpServer],
        offered: list[dict[str, Any]],
        sessions: "McpSessions | None",
    ) -> None:
        self.servers = servers
        self.offered = offered
        self.sessions = sessions
        self.mcp = {entry["name"]: entry for entry in offered}
        self.tools = dict(own)
        for entry in offered:
            server = servers.get(entry["server"])
            self.tools[entry["name"]] = Tool(
                name=entry["name"],
                description=entry["description"],
                parameters=entry["parameters"],
                requires_approval=server.needs_approval(entry["tool"]) if server is not None else True,
                runs="mcp",
            )

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name)

    def names(self) -> str:
        return ", ".join(self.tools) or "none"

    def functions(self) -> list[dict[str, Any]]:
        """Return the tools as the Chat Completions API lists them."""
        return [tool.as_function() for tool in self.tools.values()]

    def state(self) -> dict[str, Any] | None:
        """Return what the subtask keeps for the next run: the MCP tools offered (None: nothing to keep)."""
        return {STATE_KEY: self.offered} if self.servers or self.offered else None

    def run(self, tool: Tool, arguments: dict[str, Any]) -> str:
        """Run a worker tool or make an MCP call; return what the model is told."""
        if tool.runs == "worker":
            try:
                return worker_tool_run(tool.name, arguments)
            except ToolError as error:
                return f"Error: {error}"
        entry = self.mcp[tool.name]
        server = self.servers.get(entry["server"])
        if server is None or self.sessions is None:
            return f"Error: the MCP server {entry['server']!r} is no longer configured for this agent."
        try:
            result = self.sessions.call_tool(server, entry["tool"], arguments)
        except McpCallFailed as error:
            return f"Error: {error}"
        return cut(result_text(result), settings.EXECUTION_MAX_RESULT_BYTES)


@contextmanager
def run_tools(
    *, agent: str, own: Mapping[str, Tool], servers: list[McpServer], state: Mapping[str, Any], first_call: bool
) -> Iterator[RunTools]:
    """Yield the run's tools, listing the MCP servers at the subtask's first model call; close its sessions after."""
    by_name = {server.name: server for server in servers}
    kept = [] if first_call else list(state.get(STATE_KEY) or [])
    if not servers:
        yield RunTools(own=own, servers=by_name, offered=kept, sessions=None)
        return
    sessions: McpSessions
    with mcp_load().McpSessions() as sessions:
        offered = _listing(agent, servers, sessions) if first_call else kept
        yield RunTools(own=own, servers=by_name, offered=offered, sessions=sessions)


def _listing(agent: str, servers: list[McpServer], sessions: "McpSessions") -> list[dict[str, Any]]:
    """List the servers' tools (connecting to all at once; McpUnreachable if one cannot be reached).

    Each server's listing is remembered for GET /agents/.
    """
    offered = []
    for server, listed in zip(servers, sessions.list_tools(*servers), strict=True):
        tools = offered_tools(server, listed)
        try:
            McpListing.objects.update_or_create(
                agent=agent,
                server=server.name,
                defaults={"fingerprint": server.fingerprint, "tools": tools, "listed_at": timezone.now()},
            )
        except DatabaseError:
            # Only what GET /agents/ shows is lost; the subtask keeps its own listing.
            logger.warning("Could not remember the tools of MCP server %s of %s", server.name, agent, exc_info=True)
        offered.extend(tools)
    return offered


# --- arguments -----------------------------------------------------------------------------


def parse_arguments(tool: Tool, raw: str) -> tuple[dict[str, Any], str]:
    """Return a call's arguments and what is wrong with them ("" when they fit the tool's schema)."""
    try:
        arguments = json.loads(raw) if raw.strip() else {}
    except ValueError as error:
        return {}, f"the arguments of {tool.name} are not valid JSON ({error}). Send a JSON object."
    if not isinstance(arguments, dict):
        return {}, f"the arguments of {tool.name} must be a JSON object."
    return arguments, argument_problem(tool, arguments)


def argument_problem(tool: Tool, arguments: Any) -> str:
    """Return how `arguments` break the tool's schema, or "" when they fit.

    A worker tool's arguments are checked against its built-in schema, whatever schema the
    model was shown: that is what the tool reads. An MCP tool's against its inputSchema.
    """
    schema = WORKER_TOOLS[tool.name].parameters if tool.runs == "worker" else tool.parameters
    validator = validator_for(schema)(schema)
    try:
        validator.validate(arguments)
    except ValidationError as error:
        where = "/".join(str(part) for part in error.absolute_path)
        return (
            f"the arguments of {tool.name} do not match its parameters: {error.message}"
            f"{f' (at {where})' if where else ''}. Call it again with arguments that match."
        )
    return ""
