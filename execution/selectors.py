"""Reading execution records: a plan's execution, progress, current subtasks, history, events; agents and MCP tools."""

from typing import Any
from uuid import UUID

from django.db.models import QuerySet

from execution.agents.registry import agent_get, agent_mcp_servers, agents_describe
from execution.events import COUNTERS, progress_of
from execution.models import Event, ExecutionState, McpListing, StateTransition
from execution.states import SUBTASK_ACTIVE
from plans.models import Plan, Subtask
from plans.models import SubtaskStatus as S


def execution_of(plan: Plan) -> ExecutionState | None:
    """Return the plan's execution, or None before it starts."""
    try:
        return plan.execution
    except ExecutionState.DoesNotExist:
        return None


def plan_progress(*, plan_id: UUID) -> dict[str, Any]:
    """Return counts per status (queued counts as pending) and the percentage done, from the plan's counters."""
    row = Plan.objects.filter(pk=plan_id).values_list("subtask_count", *COUNTERS).get()
    return progress_of(dict(zip(S.values, row[1:], strict=True)), row[0])


def current_subtask_keys(*, plan_id: UUID) -> list[str]:
    """Return the keys of the subtasks in flight (queued, running, waiting for approval)."""
    return list(
        Subtask.objects.filter(plan_id=plan_id, status__in=SUBTASK_ACTIVE)
        .order_by("batch_index", "position")
        .values_list("key", flat=True)
    )


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
