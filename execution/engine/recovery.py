"""Runs lost to dead or hung workers, and the backoff between retries."""

from django.conf import settings

from execution.engine.dispatching import dispatch
from execution.engine.ending import after_failure
from execution.transitions import subtask_transition
from plans.models import Plan, Subtask
from plans.models import SubtaskStatus as S


def retry_delay(retries: int, *, at_least: float | None = None) -> float:
    """Return the backoff before retry number `retries + 1`: base * 2^retries, capped.

    `at_least` (an agent's Retry-After) lengthens it. Capped below half the broker's
    visibility timeout too: Redis would deliver a countdown message held longer than that
    a second time.
    """
    cap = min(settings.EXECUTION_RETRY_BACKOFF_CAP_S, settings.CELERY_VISIBILITY_TIMEOUT_S / 2)
    backoff = settings.EXECUTION_RETRY_BACKOFF_BASE_S * 2**retries
    return float(min(cap, max(backoff, at_least or 0.0)))


def recover_lost_run(*, plan: Plan, subtask: Subtask, reason: str) -> bool:
    """Re-dispatch a running subtask whose run was lost, or fail it as poison; return whether it failed.

    The caller holds the plan's lock and has checked the run is gone (its lease is
    free) or hung (past its lease). The new run is the next attempt, so if the old one
    comes back to life its outcome is fenced off.
    """
    lost_runs = subtask.lost_runs + 1
    if lost_runs >= settings.EXECUTION_MAX_LOST_RUNS:
        error = f"Poison: its run was lost {lost_runs} times (worker killed or hung); it is not dispatched again."
        subtask_transition(
            subtask=subtask,
            to=S.FAILED,
            expect_attempts=subtask.attempts,
            reason=reason,
            fields={"lost_runs": lost_runs, "error": error},
            details={"error": error},
            progress=True,
        )
        after_failure(plan, subtask)
        return True
    dispatch(plan, [subtask], batch=False, reason=reason, fields={"lost_runs": lost_runs})
    return False
