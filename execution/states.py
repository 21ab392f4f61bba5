"""Every status and the changes allowed between them, as data: the one table to read."""

from execution.models import ExecState as E
from plans.models import SUBTASK_ACTIVE, SUBTASK_SETTLED, SUBTASK_UNSETTLED
from plans.models import PlanStatus as P
from plans.models import SubtaskStatus as S

__all__ = [
    "EXECUTION_ACTIVE",
    "EXECUTION_FINISHED",
    "EXECUTION_RESUMING",
    "EXECUTION_TRANSITIONS",
    "PLAN_FINISHED",
    "PLAN_TRANSITIONS",
    "SUBTASK_ACTIVE",
    "SUBTASK_IN_FLIGHT",
    "SUBTASK_SETTLED",
    "SUBTASK_STOPPED",
    "SUBTASK_TRANSITIONS",
    "SUBTASK_UNSETTLED",
    "allowed",
]

PLAN_TRANSITIONS: dict[str, frozenset[str]] = {
    P.DRAFT: frozenset({P.APPROVED, P.CANCELLED}),
    P.APPROVED: frozenset({P.IN_PROGRESS, P.CANCELLED}),
    P.IN_PROGRESS: frozenset({P.COMPLETED, P.FAILED, P.CANCELLED}),
    P.FAILED: frozenset({P.IN_PROGRESS}),  # a failed subtask retried
    P.COMPLETED: frozenset(),
    P.CANCELLED: frozenset(),
}

SUBTASK_TRANSITIONS: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.QUEUED, S.SKIPPED, S.CANCELLED}),
    S.QUEUED: frozenset({S.RUNNING, S.FAILED, S.CANCELLED}),
    # running -> queued: a retry after an agent error, or a run lost with its worker.
    S.RUNNING: frozenset({S.DONE, S.FAILED, S.WAITING_APPROVAL, S.QUEUED, S.CANCELLED}),
    # waiting_approval -> queued: a decision was recorded and the agent runs again.
    S.WAITING_APPROVAL: frozenset({S.QUEUED, S.CANCELLED}),
    S.DONE: frozenset(),
    S.FAILED: frozenset({S.QUEUED}),  # retried by an operator
    # Skipped and cancelled subtasks become pending again when the failure that
    # stopped them is retried.
    S.SKIPPED: frozenset({S.PENDING, S.CANCELLED}),
    S.CANCELLED: frozenset({S.PENDING}),
}

EXECUTION_TRANSITIONS: dict[str, frozenset[str]] = {
    E.PREPARING: frozenset({E.RUNNING, E.FAILED, E.CANCELLED}),
    E.RUNNING: frozenset({E.WAITING_APPROVAL, E.PAUSED, E.COMPLETED, E.FAILED, E.CANCELLED}),
    E.WAITING_APPROVAL: frozenset({E.RESUMED, E.RUNNING, E.PAUSED, E.FAILED, E.CANCELLED}),
    E.RESUMED: frozenset({E.RUNNING, E.WAITING_APPROVAL, E.PAUSED, E.COMPLETED, E.FAILED, E.CANCELLED}),
    E.PAUSED: frozenset({E.RUNNING, E.FAILED, E.CANCELLED}),
    E.FAILED: frozenset({E.RUNNING}),  # a failed subtask retried
    E.COMPLETED: frozenset(),
    E.CANCELLED: frozenset(),
}

PLAN_FINISHED = frozenset({P.COMPLETED, P.FAILED, P.CANCELLED})
# SUBTASK_SETTLED, SUBTASK_UNSETTLED and SUBTASK_ACTIVE are defined with the statuses (plans/models.py),
# whose partial indexes read them. In flight: a message is (or should be) on its way or running.
SUBTASK_IN_FLIGHT = frozenset({S.QUEUED, S.RUNNING})
# What a failure stops downstream, and what a retry of it puts back to pending.
SUBTASK_STOPPED = frozenset({S.SKIPPED, S.CANCELLED})
EXECUTION_ACTIVE = frozenset({E.RUNNING, E.WAITING_APPROVAL, E.RESUMED})
EXECUTION_FINISHED = frozenset({E.COMPLETED, E.FAILED, E.CANCELLED})
# What a decision leaves an execution in until its subtask runs again (then running: run_statements.py).
EXECUTION_RESUMING = frozenset({E.RESUMED, E.WAITING_APPROVAL})


def allowed(table: dict[str, frozenset[str]], current: str, target: str) -> bool:
    """Return whether `table` allows the change from `current` to `target`."""
    return target in table.get(current, frozenset())


assert all(allowed(EXECUTION_TRANSITIONS, state, E.RUNNING) for state in EXECUTION_RESUMING)
