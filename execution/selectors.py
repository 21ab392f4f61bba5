"""Reading execution records: a plan's execution, progress, current subtasks, history, events; agents and MCP tools."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast, overload
from uuid import UUID

from django.db.models import QuerySet
from django.utils.dateparse import parse_datetime

from common.compiled import CompiledGet
from execution.agents.registry import agent_get, agent_mcp_servers, agents_describe, agents_limited
from execution.events import COUNTERS, progress_of
from execution.limits import limits_usage
from execution.models import Event, ExecutionState, McpListing, StateTransition
from execution.states import SUBTASK_ACTIVE
from plans.models import Plan, PlanRevision, PlanStatus, Subtask
from plans.models import SubtaskStatus as S
from plans.revisions import event_diff

# Read on every advance and every wait, with its SQL compiled once (common/compiled.py).
EXECUTION_OF_PLAN = CompiledGet(ExecutionState.objects.all(), by="plan")


def execution_of(plan: Plan) -> ExecutionState | None:
    """Return the plan's execution, or None before it starts (cached on the plan, as `plan.execution` caches it)."""
    related = Plan.execution.related
    if not related.is_cached(plan):
        try:
            execution = EXECUTION_OF_PLAN.get(plan.pk)
        except ExecutionState.DoesNotExist:
            related.set_cached_value(plan, None)  # type: ignore[arg-type]  # known to have none
        else:
            execution_cache(plan, execution)
    return cast(ExecutionState | None, related.get_cached_value(plan))


def execution_cache(plan: Plan, execution: ExecutionState) -> None:
    """Cache a plan's execution read with it (execution_of and `plan.execution` then read nothing), both ways."""
    ExecutionState.plan.field.set_cached_value(execution, plan)
    Plan.execution.related.set_cached_value(plan, execution)


def plan_progress(*, plan_id: UUID) -> dict[str, Any]:
    """Return counts per status (queued counts as pending) and the percentage done, from the plan's counters."""
    row = Plan.objects.filter(pk=plan_id).values_list("subtask_count", *COUNTERS).get()
    return progress_of(dict(zip(S.values, row[1:], strict=True)), row[0])


def plan_progress_counted(plan: Plan) -> dict[str, Any]:
    """Return plan_progress from a plan row read in this transaction before anything moved its counters."""
    return progress_of(
        {status: getattr(plan, name) for status, name in zip(S.values, COUNTERS, strict=True)}, plan.subtask_count
    )


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


@dataclass(frozen=True)
class HistoryEntry:
    """One change in a plan's status history: its execution's state transition, or a step of its review as a draft.

    A step of the review (a revision after the first, changes asked for) has no `id`.
    """

    id: int | None
    from_state: str
    to_state: str
    reason: str
    actor: str
    created_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)


class PlanHistory(Sequence[HistoryEntry]):
    """A plan's status history, oldest first: its review while a draft, then its execution's transitions.

    The review is short and read at once; the transitions are counted and read a slice at a
    time, so a page of a long history reads that page only.
    """

    def __init__(self, plan_id: UUID) -> None:
        self.review = list(_review(plan_id))
        self.transitions = plan_transitions(plan_id=plan_id)

    def __len__(self) -> int:
        return len(self.review) + self.transitions.count()

    @overload
    def __getitem__(self, index: int) -> HistoryEntry: ...

    @overload
    def __getitem__(self, index: slice) -> list[HistoryEntry]: ...

    def __getitem__(self, index: int | slice) -> HistoryEntry | list[HistoryEntry]:
        if isinstance(index, int):
            position = index + len(self) if index < 0 else index
            found = self[position : position + 1] if position >= 0 else []
            if not found:
                raise IndexError(index)
            return found[0]
        start, stop, step = index.indices(len(self))
        assert step == 1, "PlanHistory slices have no step"
        head = self.review[start:stop]
        first, last = max(start - len(self.review), 0), max(stop - len(self.review), 0)
        return [*head, *(_entry(row) for row in self.transitions[first:last])] if last > first else head


def plan_history(*, plan_id: UUID) -> PlanHistory:
    """Return the plan's status history, oldest first: its review while a draft, then its execution's transitions."""
    return PlanHistory(plan_id)


def _entry(row: StateTransition) -> HistoryEntry:
    return HistoryEntry(
        id=row.pk,
        from_state=row.from_state,
        to_state=row.to_state,
        reason=row.reason,
        actor=row.actor,
        created_at=row.created_at,
        metadata=row.metadata,
    )


def _review(plan_id: UUID) -> Iterator[HistoryEntry]:
    """Yield the draft's revisions after the first and the changes asked of each, in the order they came."""
    draft = PlanStatus.DRAFT
    # Not the content: a revision holds its whole submission, which the history never shows.
    revisions = PlanRevision.objects.filter(plan_id=plan_id).select_related("author").defer("content")
    for revision in revisions.order_by("revision"):
        if revision.diff is not None:
            author = revision.author.get_username() if revision.author is not None else ""
            yield HistoryEntry(
                id=None,
                from_state=draft,
                to_state=draft,
                reason=f"revised: revision {revision.revision}",
                actor=author,
                created_at=revision.created_at,
                metadata={"event": "plan.revised", **event_diff(revision.diff)},
            )
        for request in revision.change_requests:
            yield HistoryEntry(
                id=None,
                from_state=draft,
                to_state=draft,
                reason=f"changes requested: {request['reason']}",
                actor=request["requested_by"],
                created_at=parse_datetime(request["requested_at"]) or revision.created_at,
                metadata={
                    "event": "plan.changes_requested",
                    "revision": revision.revision,
                    "reason": request["reason"],
                    "approval_id": request["approval_id"],
                },
            )


def plan_events(*, plan_id: UUID, after: int, limit: int) -> QuerySet[Event]:
    """Return up to `limit` events of a plan with a sequence number above `after`, in order."""
    return Event.objects.filter(plan_id=plan_id, seq__gt=after).order_by("seq")[:limit]


UNLIMITED = {
    "max_concurrency": None,
    "requests_per_minute": None,
    "running": None,
    "requests_last_minute": None,
    "held_for_s": None,
}


def agents_with_tools() -> list[dict[str, Any]]:
    """Return the registered agents, each MCP server with the tools it listed last (null until listed).

    A listing is made by a worker when a subtask first calls its model; one made under
    another definition of the server (another command, URL or `tools`) is not shown.
    """
    agents = agents_describe()
    listings = {(listing.agent, listing.server): listing for listing in McpListing.objects.all()}
    usage = limits_usage(agents_limited())
    for described in agents:
        described["limits"] = usage.get(described["name"], UNLIMITED)
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
