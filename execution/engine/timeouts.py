"""Runs stopped at their hard time limit: the pool kills the process, the worker's main process records a time-out.

An agent that swallows the soft time limit (SoftTimeLimitExceeded is an Exception, so a
broad `except Exception` does) runs on until the hard limit, where the pool kills its
process. Unrecorded, the run would look lost (a dead process frees its lease), be sent
again, and after EXECUTION_MAX_LOST_RUNS end as poison: the wrong error, and slowly.
"""

from uuid import UUID

from django.conf import settings

from execution import canvas
from execution.engine.outcomes import Outcome, outcome_record
from plans.models import Subtask
from plans.models import SubtaskStatus as S


def subtask_hard_timeout(*, subtask_id: UUID, attempt: int, task_id: str, hard_limit_s: float) -> None:
    """Record that run `attempt` was killed at its hard time limit: a time-out, retried like any agent error."""
    subtask = Subtask.objects.filter(pk=subtask_id, status=S.RUNNING, attempts=attempt).first()
    if subtask is None:
        return  # settled or taken over meanwhile: nothing of this run is left to record
    timeout = subtask.timeout_s or settings.EXECUTION_DEFAULT_TIMEOUT_S
    error = (
        f"Timed out after {timeout}s: the agent did not stop at its time limit, "
        f"so its run was killed at the hard time limit ({hard_limit_s:g}s)."
    )
    # The killed process's lease went with its connection: nothing to release here.
    delay, _ = outcome_record(
        Outcome(subtask=subtask, attempt=attempt, step=None, history=list(subtask.tool_calls), error=error)
    )
    # The run's chord counted a failure and will not advance the plan: the retry's chain, or this, does.
    if delay is None:
        canvas.send_advance(subtask.plan_id)
        return
    run = canvas.Run(subtask_id=subtask.pk, attempt=attempt + 1, task_id=task_id, timeout_s=timeout)
    canvas.send_runs(subtask.plan_id, [run], countdown=delay)
