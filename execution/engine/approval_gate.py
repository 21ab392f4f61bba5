"""The one door through which the engine asks people for approvals and withdraws them: a Protocol it owns.

The engine sits below the approvals app, so it cannot import it. The approvals app
registers its implementation in its AppConfig.ready (approvals/apps.py); the engine calls
it through approval_gate(), so a grep for that name finds every request and withdrawal.
Each method is called inside the engine's transaction, under the plan's row lock, and
writes in that same transaction.
"""

from typing import Any, Protocol
from uuid import UUID

from django.core.exceptions import ImproperlyConfigured

from execution.agents.base import Context, call_check_set
from plans.models import Plan, Subtask


class ApprovalGate(Protocol):
    """What the engine asks of the app that keeps approvals."""

    def plan_approval_request(self, *, plan: Plan) -> None:
        """Ask for a person's approval of a submitted plan before it starts (a rule may decide it at once)."""

    def plan_gated(self, *, plan: Plan) -> bool:
        """Return whether a rule asks for (or denies) the approval of a plan submitted without one."""

    def tool_call_gated(self, *, plan_id: UUID | str, agent: str, tool: str, arguments: dict[str, Any]) -> bool:
        """Return whether a rule asks for (or denies) a call its agent marked as needing no approval."""

    def tool_call_request(
        self, *, subtask: Subtask, approval_id: UUID, call_index: int, tool: str, arguments: dict[str, Any]
    ) -> None:
        """Ask for a decision on a tool call the subtask waits for, under the approval id the engine chose.

        A rule may decide it at once (allow, deny): the subtask is then resumed as after any decision.
        """

    def approvals_withdraw(self, *, plan_id: UUID, subtask_ids: list[UUID] | None, reason: str) -> None:
        """Cancel the pending approvals of these subtasks (None: the whole plan's, its plan approval too)."""


_gate: ApprovalGate | None = None


def approval_gate_register(gate: ApprovalGate) -> None:
    """Make `gate` the one the engine calls (the approvals app does this when Django starts)."""
    global _gate
    _gate = gate

    def check(context: Context, tool: str, arguments: dict[str, Any]) -> bool:
        return gate.tool_call_gated(
            plan_id=str(context.get("plan_id", "")), agent=str(context.get("agent", "")), tool=tool, arguments=arguments
        )

    call_check_set(check)


def approval_gate() -> ApprovalGate:
    """Return the registered gate."""
    if _gate is None:
        raise ImproperlyConfigured("No approval gate is registered: is 'approvals' in INSTALLED_APPS?")
    return _gate
