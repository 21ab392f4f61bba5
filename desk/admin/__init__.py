"""Admin for plans and subtasks: progress, the DAG picture, history, events, the operator actions, and API tokens."""

from desk.admin import approvals, execution, plans, subtasks, tokens  # noqa: F401  (importing registers them)
