"""How a wait is decided and resumed: a run's tool calls put its subtask to wait, a decision resumes it.

Each call of an agent's answer that needs approval gets its own Approval, asked for through
the approval gate (approval_gate.py) under an id the engine chooses and keeps in the call's
entry of the subtask's tool-call history. The subtask waits, holding no worker, until every
call of that answer is decided; then one message resumes it (the agent runs again, reading
the decisions in its history) and the plan advances after it.
"""

from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

from django.utils import timezone

from execution.agents.base import ToolCall, ToolCallEntry, ToolCallStatus
from execution.engine.approval_gate import approval_gate
from execution.engine.plan_flow import dispatch
from execution.models import ExecState
from execution.selectors import execution_of
from execution.transitions import execution_transition, subtask_transition
from plans.models import Plan, Subtask
from plans.models import SubtaskStatus as S

# --- The tool-call history: entries and how a decision changes one ----------------------------


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


# --- Waiting -----------------------------------------------------------------------------------


def subtask_wait(
    plan: Plan,
    subtask: Subtask,
    calls: Sequence[ToolCall],
    *,
    history: list[ToolCallEntry],
    agent_state: dict[str, Any],
) -> None:
    """Put a running subtask to wait for decisions on `calls`, ask for them, and show the execution waiting.

    The caller holds the plan's lock. The change is fenced on the run's attempt, so a stale
    run raises TransitionConflict before anything is asked of anyone.
    """
    entries = [
        entry_new(
            tool=call.tool,
            arguments=call.arguments,
            status=ToolCallStatus.PENDING,
            call_id=call.call_id,
            approval_id=str(uuid4()),
        )
        for call in calls
    ]
    names = ", ".join(repr(call.tool) for call in calls)
    details: dict[str, Any] = {"tool": calls[0].tool, "call_index": len(history)}
    if len(calls) > 1:
        details["tools"] = [call.tool for call in calls]
    subtask_transition(
        subtask=subtask,
        to=S.WAITING_APPROVAL,
        reason=f"tool call {names} needs approval" if len(calls) == 1 else f"tool calls {names} need approval",
        fields={"tool_calls": [*history, *entries], **agent_state},
        details=details,
    )
    subtask.plan = plan
    execution = execution_of(plan)
    if execution is not None and execution.state in (ExecState.RUNNING, ExecState.RESUMED):
        execution_transition(
            execution=execution, to=ExecState.WAITING_APPROVAL, reason=f"{subtask.key!r} asks to call {names}"
        )
    # The execution waits before the requests: a rule may decide a call at once, which resumes the subtask.
    for index, entry in enumerate(entries, start=len(history)):
        approval_gate().tool_call_request(
            subtask=subtask,
            approval_id=UUID(entry["approval_id"]),
            call_index=index,
            tool=entry["tool"],
            arguments=entry["arguments"],
        )


# --- Deciding and resuming ---------------------------------------------------------------------


def subtask_decision_apply(
    *,
    plan: Plan,
    subtask: Subtask,
    approval_id: UUID,
    approved: bool,
    arguments: dict[str, Any] | None,
    result: Any,
    reason: str,
    actor: str,
) -> bool:
    """Record a decision on a subtask's pending tool call; resume the subtask (after commit) once none pends.

    The caller holds the plan's lock, read `subtask` after taking it, and has recorded the
    Approval's decision. Return False when the subtask no longer waits for this call (it
    was cancelled meanwhile).
    """
    if subtask.status != S.WAITING_APPROVAL:
        return False
    calls: list[ToolCallEntry] = list(subtask.tool_calls)
    index = index_of_pending(calls, str(approval_id))
    if index is None:
        return False
    verdict = "approved" if approved else "rejected"
    calls[index] = entry_decided(
        calls[index],
        approved=approved,
        arguments=arguments,
        result=result,
        reason=reason,
        actor=actor,
        at=timezone.now().isoformat(),
    )
    if any(entry["status"] == ToolCallStatus.PENDING for entry in calls):
        # Its sibling calls still wait: the decision is noted, and the agent runs once all are decided.
        subtask_transition(subtask=subtask, to=S.WAITING_APPROVAL, fields={"tool_calls": calls})
        return True
    dispatch(
        plan,
        [subtask],
        batch=False,
        reason=f"tool call {calls[index]['tool']!r} {verdict}",
        fields={"tool_calls": calls},
    )
    execution = execution_of(plan)
    if execution is not None and execution.state == ExecState.WAITING_APPROVAL:
        execution_transition(
            execution=execution,
            to=ExecState.RESUMED,
            actor=actor,
            reason=f"approval {approval_id} {verdict}",
            metadata={"approval_id": str(approval_id), "subtask_key": subtask.key},
        )
    return True
