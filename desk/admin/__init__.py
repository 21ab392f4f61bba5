"""Admin for plans and subtasks: progress, the DAG picture, history, events, operator actions, grants, API tokens."""

from desk.admin import approvals, execution, grants, plans, subtasks, tokens  # noqa: F401  (importing registers them)
