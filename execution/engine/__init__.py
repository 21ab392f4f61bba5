"""What runs next: starting plans, dispatching batches, running one subtask, waiting for people, advancing.

PostgreSQL is the truth and a Celery message is only a wake-up. Every function here
that writes first locks the plan's row (the one lock order: plan, then its rows), re-reads
what it needs, and sends messages only after the commit. Runs are fenced on
(status, attempt), so a duplicate message or a worker that wakes up late changes nothing.

    locks        the plan lock and reading its execution
    lifecycle    approve, start, cancel a plan
    advancing    the next batch, or the end
    dispatching  queue and send subtasks; stop the unfinished ones
    ending       completed, failed, failed fast, dependents skipped
    running      one attempt of a subtask: start it, call its agent
    steps        calling the agent and checking what it returned
    outcomes     recording what a run came to
    waiting      tool calls waiting for people, and decisions resuming them
    recovery     runs lost with their workers, and the retry backoff
    timeouts     runs killed at their hard time limit
"""

from execution.engine.advancing import advance, plan_advance
from execution.engine.dispatching import dispatch, downstream_ids
from execution.engine.lifecycle import plan_approve, plan_cancel, plan_start
from execution.engine.locks import execution_of, plan_lock, plan_lock_for
from execution.engine.recovery import recover_lost_run, retry_delay
from execution.engine.running import subtask_run
from execution.engine.timeouts import subtask_hard_timeout
from execution.engine.waiting import subtask_decision_apply

__all__ = [
    "advance",
    "dispatch",
    "downstream_ids",
    "execution_of",
    "plan_advance",
    "plan_approve",
    "plan_cancel",
    "plan_lock",
    "plan_lock_for",
    "plan_start",
    "recover_lost_run",
    "retry_delay",
    "subtask_decision_apply",
    "subtask_hard_timeout",
    "subtask_run",
]
