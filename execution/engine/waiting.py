"""Waiting for people: a run's tool calls that need approval, and a decision that resumes the subtask.

Each call of a model answer that needs approval gets its own Approval (created by the
approvals app on the engine's signal, under ids the engine chooses). The subtask waits,
holding no worker, until every call of that answer is decided; then one message resumes it.
"""

from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

from django.utils import timezone

from execution.agents.base import ToolCall
from execution.engine.dispatching import dispatch
from execution.engine.locks import execution_of
from execution.models import ExecState
from execution.signals import tool_call_requested
from execution.tool_calls import (
    ToolCallEntry,
    ToolCallStatus,
    any_pending,
    entry_decided,
    entry_new,
    index_of_pending,
)
from execution.transitions import execution_transition, subtask_record, subtask_transition
from plans.models import Plan, Subtask
from plans.models import SubtaskStatus as S


def waiting_transition(
    subtask: Subtask,
    calls: Sequence[ToolCall],
    *,
    history: list[ToolCallEntry],
    attempt: int,
    state: dict[str, Any],
) -> None:
    """Put a running subtask to wait for decisions on `calls` (fenced on its attempt)."""
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
        expect_attempts=attempt,
        reason=f"tool call {names} needs approval" if len(calls) == 1 else f"tool calls {names} need approval",
        fields={"tool_calls": [*history, *entries], **state},
        details=details,
    )


def approvals_request(plan: Plan, subtask: Subtask, calls: Sequence[ToolCall], *, first_index: int) -> None:
    """Ask for a decision on each call the subtask now waits for, and show the execution waiting."""
    for offset, call in enumerate(calls):
        index = first_index + offset
        # The approvals app creates the Approval (and its event) in this transaction.
        tool_call_requested.send(
            sender=Subtask,
            subtask=subtask,
            approval_id=UUID(subtask.tool_calls[index]["approval_id"]),
            call_index=index,
            tool=call.tool,
            arguments=call.arguments,
        )
    execution = execution_of(plan)
    if execution is not None and execution.state in (ExecState.RUNNING, ExecState.RESUMED):
        execution_transition(
            execution=execution,
            to=ExecState.WAITING_APPROVAL,
            reason=f"{subtask.key!r} asks to call {', '.join(repr(call.tool) for call in calls)}",
        )


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
    if any_pending(calls):
        # Its sibling calls still wait: the model is called again once all are decided.
        subtask_record(subtask=subtask, fields={"tool_calls": calls})
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
