"""The entries of a subtask's tool-call history: their shape, their statuses, and how a decision changes one.

The history (Subtask.tool_calls) is what agents read back on every run: the calls they
asked for, oldest first, each with its decision. It is written only with the subtask's
status changes (execution/transitions.py).
"""

from enum import StrEnum
from typing import Any, TypedDict

# The longest tool name an agent may ask for (an approval stores it in a column this long).
TOOL_NAME_MAX_LENGTH = 255


class ToolCallStatus(StrEnum):
    AUTO = "auto"  # needed no approval: noted, and the agent went on at once
    PENDING = "pending"  # waits for a decision
    APPROVED = "approved"
    REJECTED = "rejected"  # rejected, or expired (reason "expired")


class ToolCallEntry(TypedDict, total=False):
    tool: str
    arguments: dict[str, Any]
    requires_approval: bool
    status: str
    result: Any
    call_id: str
    approval_id: str
    approved_arguments: dict[str, Any] | None
    reason: str
    decided_by: str
    decided_at: str


def entry_new(
    *, tool: str, arguments: dict[str, Any], status: ToolCallStatus, call_id: str = "", approval_id: str = ""
) -> ToolCallEntry:
    """Return the entry of a call an agent just asked for."""
    entry = ToolCallEntry(
        tool=tool,
        arguments=arguments,
        requires_approval=status != ToolCallStatus.AUTO,
        status=status,
        result=None,
    )
    if call_id:
        entry["call_id"] = call_id
    if approval_id:
        entry["approval_id"] = approval_id
    return entry


def entry_decided(
    entry: ToolCallEntry,
    *,
    approved: bool,
    arguments: dict[str, Any] | None,
    result: Any,
    reason: str,
    actor: str,
    at: str,
) -> ToolCallEntry:
    """Return a pending entry with its decision: approved (maybe with edited arguments and a result) or not."""
    decided = ToolCallEntry(**entry)
    decided["status"] = ToolCallStatus.APPROVED if approved else ToolCallStatus.REJECTED
    decided["approved_arguments"] = (arguments if arguments is not None else entry["arguments"]) if approved else None
    decided["result"] = result if approved else None
    decided["reason"] = reason
    decided["decided_by"] = actor
    decided["decided_at"] = at
    return decided


def index_of_pending(entries: list[ToolCallEntry], approval_id: str) -> int | None:
    """Return the position of the pending entry waiting for this approval, if any."""
    return next(
        (
            index
            for index, entry in enumerate(entries)
            if entry.get("approval_id") == approval_id and entry["status"] == ToolCallStatus.PENDING
        ),
        None,
    )


def any_pending(entries: list[ToolCallEntry]) -> bool:
    """Return whether a call of the history still waits for a decision."""
    return any(entry["status"] == ToolCallStatus.PENDING for entry in entries)
