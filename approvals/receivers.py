"""What the approvals app does when the engine asks for a human, or stops waiting for one."""

from typing import Any

from django.dispatch import receiver

from approvals.models import Approval, ApprovalKind
from approvals.services import approval_request, approvals_cancel
from execution.signals import plan_approval_requested, tool_call_requested, waits_cancelled


@receiver(plan_approval_requested, dispatch_uid="approvals.request_plan_approval")
def request_plan_approval(sender: Any, *, plan: Any, **kwargs: Any) -> Approval:
    return approval_request(plan=plan, kind=ApprovalKind.PLAN)


@receiver(tool_call_requested, dispatch_uid="approvals.request_tool_call")
def request_tool_call(
    sender: Any,
    *,
    subtask: Any,
    approval_id: Any,
    call_index: int,
    tool: str,
    arguments: dict[str, Any],
    **kwargs: Any,
) -> Approval:
    return approval_request(
        plan=subtask.plan,
        kind=ApprovalKind.TOOL_CALL,
        approval_id=approval_id,
        subtask=subtask,
        call_index=call_index,
        tool=tool,
        arguments=arguments,
    )


@receiver(waits_cancelled, dispatch_uid="approvals.cancel_waits")
def cancel_waits(sender: Any, *, plan_id: Any, subtask_ids: Any, reason: str, **kwargs: Any) -> int:
    return approvals_cancel(plan_id=plan_id, subtask_ids=subtask_ids, reason=reason)
