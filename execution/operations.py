"""Which operations apply to a plan now: the one rule behind the services' guards and the desk's buttons."""

from execution.models import ExecState
from execution.states import EXECUTION_ACTIVE, PLAN_FINISHED
from execution.transitions import TransitionNotAllowed
from plans.models import PlanStatus

PLAN_OPERATIONS = ("approve", "execute", "pause", "resume", "retry", "cancel")


def plan_operations(*, status: str, state: str | None, has_failed: bool) -> frozenset[str]:
    """Return the operations that apply to a plan in `status` whose execution is in `state`.

    `has_failed`: whether the plan has a failed subtask (what a retry needs).
    """
    running = status == PlanStatus.IN_PROGRESS
    applies = {
        "approve": status == PlanStatus.DRAFT,
        "execute": status == PlanStatus.APPROVED,
        "pause": running and state in EXECUTION_ACTIVE,
        "resume": running and state == ExecState.PAUSED,
        "retry": has_failed and status in (PlanStatus.IN_PROGRESS, PlanStatus.FAILED),
        "cancel": status not in PLAN_FINISHED,
    }
    return frozenset(name for name in PLAN_OPERATIONS if applies[name])


def operation_require(name: str, *, status: str, state: str | None, has_failed: bool = True) -> None:
    """Raise TransitionNotAllowed, saying why, unless the operation applies to the plan now."""
    if name in plan_operations(status=status, state=state, has_failed=has_failed):
        return
    current = state if state is not None and status == PlanStatus.IN_PROGRESS else status
    refusals = {
        "approve": (status, PlanStatus.APPROVED, f"Only a draft plan can be approved; this one is {status}."),
        "execute": (status, PlanStatus.IN_PROGRESS, f"Only an approved plan can be executed; this one is {status}."),
        "pause": (current, ExecState.PAUSED, f"Only a running plan can be paused; this one is {current}."),
        "resume": (current, ExecState.RUNNING, f"Only a paused plan can be resumed; this one is {current}."),
        "retry": (
            status,
            PlanStatus.IN_PROGRESS,
            f"The plan is {status}; its subtasks cannot be retried."
            if has_failed
            else "The plan has no failed subtasks to retry.",
        ),
        "cancel": (status, PlanStatus.CANCELLED, f"The plan is already {status}."),
    }
    current_status, target, message = refusals[name]
    raise TransitionNotAllowed("plan", current_status, target, message)
