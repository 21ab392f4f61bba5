"""Reading execution records: a plan's transition history and event log; the agents with their MCP tools."""

from typing import Any
from uuid import UUID

from django.db.models import QuerySet

from execution.agents.registry import agent_get, agent_mcp_servers, agents_describe
from execution.models import Event, McpListing, StateTransition


def plan_transitions(*, plan_id: UUID) -> QuerySet[StateTransition]:
    """Return the state transitions of a plan's execution, oldest first."""
    return StateTransition.objects.filter(execution__plan_id=plan_id).order_by("id")


def plan_events(*, plan_id: UUID, after: int, limit: int) -> QuerySet[Event]:
    """Return up to `limit` events of a plan with a sequence number above `after`, in order."""
    return Event.objects.filter(plan_id=plan_id, seq__gt=after).order_by("seq")[:limit]


def agents_with_tools() -> list[dict[str, Any]]:
    """Return the registered agents, each MCP server with the tools it listed last (null until listed).

    A listing is made by a worker when a subtask first calls its model; one made under
    another definition of the server (another command, URL or `tools`) is not shown.
    """
    agents = agents_describe()
    listings = {(listing.agent, listing.server): listing for listing in McpListing.objects.all()}
    for described in agents:
        servers = {server.name: server for server in agent_mcp_servers(agent_get(described["name"]))}
        for entry in described["mcp_servers"]:
            server = servers[entry["name"]]
            listing = listings.get((described["name"], server.name))
            if listing is None or listing.fingerprint != server.fingerprint:
                entry.update(tools=None, listed_at=None)
                continue
            entry["listed_at"] = listing.listed_at
            entry["tools"] = [
                {
                    "name": tool["name"],
                    "tool": tool["tool"],
                    "description": tool["description"],
                    "requires_approval": server.needs_approval(tool["tool"]),
                    "parameters": tool["parameters"],
                }
                for tool in listing.tools
            ]
    return agents
