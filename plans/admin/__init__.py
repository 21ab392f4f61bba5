"""Admin for plans and subtasks: progress, the DAG picture, history, events, and the operator actions."""

from plans.admin import plan, subtask  # noqa: F401  (importing registers them)
