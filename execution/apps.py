"""App config for execution: checks the agents (EXECUTION_AGENTS_FILE) when any process starts."""

from django.apps import AppConfig

from execution.agents.definitions import AgentsFileError
from execution.agents.registry import agents_load


class ExecutionConfig(AppConfig):
    name = "execution"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Web processes, workers and commands all start here, so a bad agents file stops
        # each of them at once instead of failing subtasks later. SystemExit, because
        # Celery logs and swallows exceptions raised while it sets Django up.
        try:
            agents_load()
        except AgentsFileError as error:
            raise SystemExit(str(error)) from None
