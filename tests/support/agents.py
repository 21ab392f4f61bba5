"""Callables for the python agent in tests (allowed as "tests.agents:*"), misbehaving ones too."""

import contextlib
import os
import signal
import time
from typing import Any

import psycopg
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection

from execution.agents.base import BaseAgent, Context, ToolCall, ToolCalls

# Registered in the test cluster's workers (tests/support/worker_settings.py) and, per test, in the test process.
MISBEHAVING_AGENTS = {"not_a_step": {"class": "tests.support.agents.NotAStepAgent"}}


def crash(context: dict[str, Any]) -> None:
    """Kill the worker process running this subtask, every time: a poison subtask."""
    os.kill(os.getpid(), signal.SIGKILL)


def dependency_keys(context: dict[str, Any]) -> list[str]:
    return sorted(context["dependencies"])


def dependency_keys_after_a_nap(context: dict[str, Any]) -> list[str]:
    """Sleep input.sleep_ms (so runs can overlap), then finish with the keys of the dependencies it was given."""
    time.sleep(context["input"].get("sleep_ms", 0) / 1000)
    return sorted(context["dependencies"])


def two_tool_calls(context: dict[str, Any]) -> ToolCalls:
    return ToolCalls((ToolCall("read", call_id="1"), ToolCall("write", call_id="2")))


def raises(context: dict[str, Any]) -> None:
    raise RuntimeError(f"the agent fell over on attempt {context['attempt']}")


def raises_naming_a_url_with_credentials(context: dict[str, Any]) -> None:
    raise ConnectionError("cannot reach https://agent:hunter2@models.example/v1?api_key=sk-sekrit")


def hangs(context: dict[str, Any]) -> None:
    time.sleep(600)


def ignores_its_time_limit(context: dict[str, Any]) -> None:
    """Hang, swallowing the soft time limit as a careless `except Exception` would: only the hard limit stops it."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        with contextlib.suppress(SoftTimeLimitExceeded):
            time.sleep(600)


def returns_a_set(context: dict[str, Any]) -> set[int]:
    return {1, 2, 3}


def returns_an_object(context: dict[str, Any]) -> object:
    return object()


def returns_too_much(context: dict[str, Any]) -> str:
    return "x" * context["input"]["size"]


def returns_a_nul_character(context: dict[str, Any]) -> dict[str, str]:
    return {"text": "before\x00after"}


def returns_a_lone_surrogate(context: dict[str, Any]) -> str:
    return "half a pair: \ud800"


def fails_with_a_nul_character(context: dict[str, Any]) -> None:
    raise ValueError("bad byte \x00 in the answer")


def asks_for_a_nameless_tool(context: dict[str, Any]) -> ToolCall:
    return ToolCall(tool="")


class NotAStepAgent(BaseAgent):
    """Returns what an HTTP agent would send ({"result": ...}) instead of a step."""

    description = "Returns a dict instead of a step."

    def run(self, context: Context) -> Any:
        return {"result": "a plain dict, not a Finish"}


def first_delivers(context: dict[str, Any]) -> str:
    """Run input.deliver's first run in this process while this one runs (in-process engine tests), then finish."""
    # Imported here: worker settings import this module before Django has loaded its apps.
    from execution.engine.runs import subtask_run
    from plans.models import Subtask

    other = Subtask.objects.get(plan_id=context["plan_id"], key=context["input"]["deliver"])
    subtask_run(subtask_id=other.pk, attempt=1, worker="in-process@test:2")
    return "finished after the other"


def superseded_meanwhile(context: dict[str, Any]) -> str:
    """Let the engine give this run's subtask to its next attempt meanwhile (in-process engine tests), then finish."""
    # Imported here: worker settings import this module before Django has loaded its apps.
    from django.db import transaction

    from execution.engine.plan_flow import plan_lock_for
    from execution.engine.runs import recover_lost_run
    from plans.models import Subtask

    with transaction.atomic():
        plan = plan_lock_for(context["subtask_id"])
        recover_lost_run(plan=plan, subtask=Subtask.objects.get(pk=context["subtask_id"]), reason="taken over")
    return "too late"


def connection_cut(context: dict[str, Any]) -> dict[str, int]:
    """Have PostgreSQL end the connection this process's tasks share, as a database restart would; return its pid."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [backend])
    return {"process": os.getpid(), "backend": backend}


def database_session(context: dict[str, Any]) -> dict[str, int]:
    """Return this process's id and the PostgreSQL backend serving its connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()
    return {"process": os.getpid(), "backend": backend}
