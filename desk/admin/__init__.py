"""Admin for plans and subtasks: progress, the DAG picture, history, events, and the operator actions."""

from desk.admin import approvals, execution, plans, subtasks  # noqa: F401  (importing registers them)
