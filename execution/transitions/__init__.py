"""The only writers of a status: plan, execution and subtask changes, checked and recorded.

Each change is checked against the tables in states.py, made with a conditional UPDATE
on the status the caller read (so of two concurrent changes exactly one wins; the other
gets TransitionConflict), and recorded in the same transaction: a StateTransition row for
executions and an event for everything.

    plans     plan and execution changes
    subtasks  subtask changes, one or many at a time
    runs      the two statements of a run's hot path: its start and its finish
"""

from execution.transitions.errors import TransitionConflict, TransitionNotAllowed
from execution.transitions.plans import PLAN_EVENTS, execution_transition, plan_transition
from execution.transitions.subtasks import (
    SUBTASK_EVENTS,
    subtask_record,
    subtask_transition,
    subtasks_redispatch,
    subtasks_transition,
)

__all__ = [
    "PLAN_EVENTS",
    "SUBTASK_EVENTS",
    "TransitionConflict",
    "TransitionNotAllowed",
    "execution_transition",
    "plan_transition",
    "subtask_record",
    "subtask_transition",
    "subtasks_redispatch",
    "subtasks_transition",
]
