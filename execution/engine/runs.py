"""How one run goes: started (fenced and leased), the agent called outside any transaction, its outcome recorded.

A run is one attempt of a subtask, sent as a run_subtask message carrying its attempt
number. It starts only if the subtask is queued at the attempt before: one statement
(run_start in execution/run_statements.py) locks the plan, takes the run's lease, marks the
subtask running and reads the agent's context. The agent is then called outside any
transaction. A result is recorded by one statement too (run_finish); anything else (a
failure, a retry, tool calls to wait for) in a transaction under the plan's lock, whose
first write is the change fenced on (running, attempt), so a stale run writes nothing.

The lease is a PostgreSQL advisory lock on (subtask, attempt) held by the worker's
connection while the run lasts; PostgreSQL drops it when the worker's process dies, so a
dead run (lease free) is told from a live or frozen one (lease held) without waiting for a
time-out. A run lost with its worker is sent again as the next attempt, or failed as poison
after EXECUTION_MAX_LOST_RUNS. A run killed at its hard time limit is recorded as a time-out.

A run of an agent with provider limits (execution/limits.py) is first admitted (_admit): over
a limit, it is deferred (RunDeferred: its message is sent again after a delay, the same
attempt, its subtask left queued) before anything is written; admitted, it holds one of
the agent's slots until it ends.

Where a run starts: _start; where it is put off to later (sent again after a delay): _retry;
where it ends: outcome_record.
"""

import dataclasses
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from common.logs import log_context_push
from common.redaction import credentials_stripped
from execution import canvas
from execution.agents.base import (
    STEP_TYPES,
    TOOL_NAME_MAX_LENGTH,
    Agent,
    Fail,
    Finish,
    Step,
    ToolCall,
    ToolCallEntry,
    ToolCalls,
    ToolCallStatus,
    call_gated,
)
from execution.agents.limits import agent_limits
from execution.agents.registry import UnknownAgent, agent_get, agents_limited
from execution.engine.plan_flow import dispatch, failure_policy_apply, plan_lock_for
from execution.engine.waits import entry_new, subtask_wait
from execution.limits import deferral_count, hold_back, run_admit, slot_release
from execution.metrics import resume_observe
from execution.run_statements import RunStart, run_finish, run_start
from execution.transitions import TransitionConflict, subtask_transition
from plans.json_values import json_problem, storable_text, text_problem
from plans.models import Plan, PlanStatus, Subtask
from plans.models import SubtaskStatus as S
from plans.shape import MAX_BODY_DEPTH

logger = logging.getLogger(__name__)

MAX_AUTO_TOOL_CALLS = 100


@dataclass(frozen=True)
class Started:
    subtask: Subtask
    context: dict[str, Any]
    # Why the agent is not to be called at all (the run fails with it, not retried); "" to call it.
    refusal: str = ""


@dataclass(frozen=True)
class Outcome:
    """What a run came to: a step, or (step None) an error of this attempt."""

    subtask: Subtask
    attempt: int
    step: Step | None
    history: list[ToolCallEntry]
    error: str = ""
    retry_after: float | None = None


class RunDeferred(Exception):
    """The run is over one of its agent's limits: send it again, the same attempt, after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"deferred for {delay:g}s")
        self.delay = delay


# --- One run, top to bottom ----------------------------------------------------------------------


def subtask_run(*, subtask_id: UUID, attempt: int, worker: str, agent_name: str = "") -> float | None:
    """Run attempt `attempt` of a subtask; return a delay when it should be retried.

    Starts only if the subtask is queued at the previous attempt (fenced); a message for
    a run whose worker died takes the run over instead; anything else is a duplicate or
    stale message and is dropped. The agent runs outside any transaction. Raise
    RunDeferred when the run is over one of its agent's limits (`agent_name`: the
    subtask's agent as its message names it; read from the database when not given).
    """
    slot = _admit(subtask_id=subtask_id, attempt=attempt, agent=agent_name)
    try:
        started = _start(subtask_id=subtask_id, attempt=attempt, worker=worker)
    except BaseException:
        _slot_release(slot)
        raise
    if started is None:
        _slot_release(slot)
        return None
    released = False
    try:
        step: Step | None = None
        history = list(started.context["tool_calls"])
        error = ""
        retry_after: float | None = None
        try:
            agent = agent_get(started.subtask.agent)
        except UnknownAgent:
            agent = None
        try:
            step = (
                Fail(started.refusal)
                if started.refusal
                else agent_call(agent, started.subtask.agent, started.context, history)
            )
        except SoftTimeLimitExceeded:
            error = f"Timed out after {started.subtask.timeout_s or settings.EXECUTION_DEFAULT_TIMEOUT_S}s."
        except Exception as exc:  # an agent's failure, whatever it is, is this attempt's failure
            error = storable_text(credentials_stripped(f"{type(exc).__name__}: {exc}"))
            logger.info("Subtask %s attempt %s failed: %s", subtask_id, attempt, error)
            # The traceback's last line is the raw message: only where the operator asked for DEBUG.
            logger.debug("Subtask %s attempt %s failed", subtask_id, attempt, exc_info=True)
            retry_after = getattr(exc, "retry_after", None)
            if retry_after and agent_limits(agent).shares_retry_after:
                hold_back(agent=started.subtask.agent, seconds=retry_after)
        outcome = Outcome(
            subtask=started.subtask, attempt=attempt, step=step, history=history, error=error, retry_after=retry_after
        )
        delay, released = outcome_record(outcome)
        return delay
    finally:
        if not released:
            lease_release(subtask_id, attempt)
        _slot_release(slot)


# --- Provider limits ----------------------------------------------------------------------------


def _admit(*, subtask_id: UUID, attempt: int, agent: str) -> tuple[str, int] | None:
    """Check a run against its agent's limits before it starts; return the slot it took, if any.

    Only a message that would start a run is checked (its subtask queued at the previous
    attempt); a duplicate or stale one goes on to be told apart as before. A deferred run
    leaves its subtask queued, its attempts and retries untouched, and no event: only its
    queued_at moves to when it is due again, as a retry's does. The reconciler goes by
    queued_at, and cannot always see the message in flight: a worker that gets the
    deferred message (the same task id) before it has finished with the old one may
    forget it, so without this a waiting run would be taken for a lost message.
    """
    limited = agents_limited()
    if not limited:
        return None
    queued = Subtask.objects.filter(pk=subtask_id, status=S.QUEUED, attempts=attempt - 1)
    name = agent or queued.values_list("agent", flat=True).first()
    limits = limited.get(name or "")
    if not name or limits is None:
        return None
    admission = run_admit(agent=name, limits=limits)
    if not admission.admitted:
        delay = min(settings.CELERY_VISIBILITY_TIMEOUT_S / 2, max(admission.wait_s, 0.05))
        if not queued.update(queued_at=timezone.now() + timedelta(seconds=delay)):
            return None  # a duplicate or stale message: it starts nothing, and is told apart as before
        deferral_count(name)
        raise RunDeferred(delay)
    return None if admission.slot is None else (name, admission.slot)


def _slot_release(slot: tuple[str, int] | None) -> None:
    if slot is not None:
        slot_release(*slot)


# --- The start ----------------------------------------------------------------------------------


def _start(*, subtask_id: UUID, attempt: int, worker: str) -> Started | None:
    """Start the run in one statement; on anything but a start, find out why under the plan's lock."""
    now = timezone.now()
    found = run_start(
        subtask_id=subtask_id,
        attempt=attempt,
        worker=worker,
        now=now,
        timeout_s=settings.EXECUTION_DEFAULT_TIMEOUT_S,
        lease_extra_s=settings.EXECUTION_HARD_LIMIT_GRACE_S + settings.EXECUTION_LEASE_SLACK_S,
        max_context=settings.EXECUTION_MAX_CONTEXT_BYTES,
    )
    if found is None or found.plan_status != PlanStatus.IN_PROGRESS:
        return None
    if found.row is None:
        if found.leased:
            lease_release(subtask_id, attempt)
        _not_started(subtask_id=subtask_id, attempt=attempt, leased=found.leased)
        return None
    subtask = Subtask(**found.row, status=S.RUNNING, worker=worker, started_at=now)
    log_context_push(plan_id=subtask.plan_id)  # the task's log lines name the plan too (until the task ends)
    resume_observe(subtask.tool_calls)  # a run resuming after a decision: its latency, for /metrics
    return Started(subtask=subtask, context=_context(found, subtask), refusal=_context_refusal(found))


def _context_refusal(found: RunStart) -> str:
    """Return why the run may not start its agent: its dependencies' results are over the limit; else ""."""
    limit = settings.EXECUTION_MAX_CONTEXT_BYTES
    if found.context_bytes <= limit:
        return ""
    return (
        f"The results of this subtask's dependencies add up to {found.context_bytes} bytes, "
        f"over the limit of {limit} a run may gather (EXECUTION_MAX_CONTEXT_BYTES)."
    )


def _not_started(*, subtask_id: UUID, attempt: int, leased: bool) -> None:
    """Tell apart a run whose worker died (take it over) from a duplicate or stale message (drop it)."""
    with transaction.atomic():
        try:
            plan = plan_lock_for(subtask_id)
        except Plan.DoesNotExist:
            return
        subtask = Subtask.objects.get(pk=subtask_id)
        if plan.status == PlanStatus.IN_PROGRESS and subtask.status == S.RUNNING and subtask.attempts == attempt:
            # Delivered again while marked running: a live (or frozen) run still holds its
            # lease, so this is a duplicate; a free lease means its worker died.
            if leased:
                recover_lost_run(plan=plan, subtask=subtask, reason="its worker was lost; delivered again")
            return
    logger.info(
        "Dropping stale run %s of subtask %s (%s, attempt %s)", attempt, subtask_id, subtask.status, subtask.attempts
    )


def _context(found: RunStart, subtask: Subtask) -> dict[str, Any]:
    """Return what the agent sees: the subtask, its plan, its dependencies' results, its tool calls."""
    return {
        "plan_id": str(subtask.plan_id),
        "plan_goal": found.plan_goal,
        "plan_metadata": found.plan_metadata,
        "session_id": found.plan_session_id,
        "subtask_id": str(subtask.pk),
        "subtask_key": subtask.key,
        "description": subtask.description,
        "agent": subtask.agent,
        "input": subtask.input,
        "attempt": subtask.attempts,
        "dependencies": found.dependencies,
        "tool_calls": list(subtask.tool_calls),
        "conversation": list(subtask.conversation),
        "usage": dict(subtask.usage),
        "agent_state": dict(subtask.agent_state),
        "execution_mode": "subtask",
    }


# --- Calling the agent ------------------------------------------------------------------------------
# An agent may return anything; what is not a step, a result that is not JSON, a result over
# EXECUTION_MAX_RESULT_BYTES, or one PostgreSQL cannot store (a NUL character, a lone surrogate)
# ends the subtask with an error naming the problem, instead of crashing the worker on the write
# (which would look like a lost run, then poison).


def agent_call(agent: Agent | None, name: str, context: dict[str, Any], history: list[ToolCallEntry]) -> Step:
    """Call the agent until it returns a result, a failure, or tool calls that need approval.

    A call that needs no approval is noted in `history` (status "auto"), which the caller
    stores whatever happens next, and the agent is called again at once.
    """
    if agent is None:
        return Fail(f"Agent {name!r} is not registered.")
    for _ in range(MAX_AUTO_TOOL_CALLS):
        step = agent.run({**context, "tool_calls": list(history)})
        problem = step_problem(step)
        if problem:
            return Fail(problem)
        if isinstance(step, Fail):
            # The agent's own words, kept: only credentials and what PostgreSQL cannot store are taken out.
            return dataclasses.replace(step, error=storable_text(credentials_stripped(step.error)))
        if not isinstance(step, ToolCall) or step.requires_approval:
            return step
        if call_gated(context, step.tool, step.arguments):
            # A rule outranks the agent: the call gets its approval like any other.
            return dataclasses.replace(step, requires_approval=True)
        history.append(
            entry_new(tool=step.tool, arguments=step.arguments, status=ToolCallStatus.AUTO, call_id=step.call_id)
        )
    return Fail(f"The agent made more than {MAX_AUTO_TOOL_CALLS} tool calls without approval in a row.")


def step_problem(step: Any) -> str:
    """Return what is wrong with what an agent returned, or "" for a step the engine can act on."""
    if not isinstance(step, STEP_TYPES):
        return f"The agent returned {type(step).__name__}, not a step (Finish, Fail, ToolCall or ToolCalls)."
    limits = {"conversation": "EXECUTION_MAX_CONVERSATION_BYTES"}
    for name in ("conversation", "usage", "state"):
        state = getattr(step, name, None)
        problem = _json_problem(name, state, limit=limits.get(name)) if state is not None else ""
        if problem:
            return problem
    if isinstance(step, Finish):
        return _json_problem("result", step.result, limit="EXECUTION_MAX_RESULT_BYTES")
    if isinstance(step, Fail):
        return (
            "" if isinstance(step.error, str) else f"The agent failed with a {type(step.error).__name__}, not a text."
        )
    if isinstance(step, ToolCalls) and not step.calls:
        return "The agent asked for no tool calls (an empty ToolCalls)."
    if len(calls := _calls(step)) > settings.EXECUTION_MAX_TOOL_CALLS_PER_ANSWER:
        return (
            f"The agent asked for {len(calls)} tool calls at once, over the limit of "
            f"{settings.EXECUTION_MAX_TOOL_CALLS_PER_ANSWER} (EXECUTION_MAX_TOOL_CALLS_PER_ANSWER)."
        )
    for call in calls:
        if not isinstance(call, ToolCall) or not isinstance(call.tool, str) or not call.tool:
            return "The agent asked for a tool call without a tool name."
        if len(call.tool) > TOOL_NAME_MAX_LENGTH or text_problem(call.tool):
            return f"The agent asked for a tool whose name is not a text of at most {TOOL_NAME_MAX_LENGTH} characters."
        if not isinstance(call.arguments, dict):
            return f"The arguments of tool call {call.tool!r} are not an object."
        problem = _json_problem(f"arguments of tool call {call.tool!r}", call.arguments, limit=None)
        if problem:
            return problem
    return ""


def _json_problem(what: str, value: Any, *, limit: str | None) -> str:
    """Return what keeps `value` from being stored; `limit` names the setting that bounds its size, if any."""
    try:
        size = len(json.dumps(value, cls=DjangoJSONEncoder, allow_nan=False).encode())
    except (TypeError, ValueError, RecursionError) as error:
        return f"The agent's {what} is not JSON-serialisable ({type(error).__name__}: {error})."
    if limit is not None and size > (most := getattr(settings, limit)):
        return f"The agent's {what} is {size} bytes, over the limit of {most} ({limit})."
    problem = json_problem(value, max_depth=MAX_BODY_DEPTH)
    if problem:
        return f"The agent's {what} cannot be stored: {problem[0].lower()}{problem[1:]}"
    return ""


def _calls(step: Step) -> list[ToolCall]:
    if isinstance(step, ToolCalls):
        return list(step.calls)
    return [step] if isinstance(step, ToolCall) else []


# --- The outcome ------------------------------------------------------------------------------------


def outcome_record(outcome: Outcome) -> tuple[float | None, bool]:
    """Record a run's outcome and apply what follows from it.

    Return a delay when the subtask is to be retried, and whether the run's lease was
    released with the outcome. A result is one statement (the hot path); anything else
    is a transaction under the plan's lock.
    """
    if isinstance(outcome.step, Finish):
        return None, _finish(outcome, outcome.step)
    return _record(outcome), False


def _finish(outcome: Outcome, step: Finish) -> bool:
    subtask = outcome.subtask
    finished, released = run_finish(
        subtask_id=subtask.pk,
        plan_id=subtask.plan_id,
        attempt=outcome.attempt,
        now=timezone.now(),
        result=step.result,
        tool_calls=outcome.history,
        conversation=step.conversation,
        usage=step.usage,
        agent_state=step.state,
    )
    if not finished:
        logger.info("Ignoring the outcome of stale run %s of subtask %s", outcome.attempt, subtask.pk)
    return released


def _record(outcome: Outcome) -> float | None:
    """Record a failure, a retry or tool calls to wait for, under the plan's lock; return the retry's delay."""
    subtask, attempt = outcome.subtask, outcome.attempt
    with transaction.atomic():
        plan = plan_lock_for(subtask.pk)
        in_progress = plan.status == PlanStatus.IN_PROGRESS
        step = outcome.step
        try:
            if step is None and in_progress and subtask.retries < subtask.max_retries:
                return _retry(outcome)
            if step is None:
                step = Fail(
                    f"{outcome.error} (failed {subtask.retries + 1} times)" if subtask.retries else outcome.error
                )
            calls = _calls(step)
            if calls and in_progress:
                subtask_wait(plan, subtask, calls, history=outcome.history, agent_state=_agent_state(step))
                return None
            _settle(outcome, step, plan_status=plan.status)
        except TransitionConflict:
            logger.info("Ignoring the outcome of stale run %s of subtask %s", attempt, subtask.pk)
            return None
        if isinstance(step, Fail):
            failure_policy_apply(plan, subtask)
    return None


def _retry(outcome: Outcome) -> float:
    subtask = outcome.subtask
    delay = retry_delay(subtask.retries, at_least=outcome.retry_after)
    subtask_transition(
        subtask=subtask,
        to=S.QUEUED,
        reason="retrying after an error",
        fields={
            "retries": subtask.retries + 1,
            "error": outcome.error,
            "tool_calls": outcome.history,
            "queued_at": timezone.now() + timedelta(seconds=delay),
        },
        details={"error": outcome.error, "retry_in_s": delay},
    )
    return delay


def _settle(outcome: Outcome, step: Step, *, plan_status: str) -> None:
    """End the subtask: failed with its error, or cancelled (tool calls asked for after its plan ended)."""
    fields: dict[str, Any] = {"tool_calls": outcome.history, **_agent_state(step)}
    if isinstance(step, Fail):
        to, details = S.FAILED, {"error": step.error}
        fields["error"] = step.error
    else:
        to, details = S.CANCELLED, {}
    subtask_transition(
        subtask=outcome.subtask,
        to=to,
        reason="" if to != S.CANCELLED else f"plan is {plan_status}",
        fields=fields,
        details=details,
        progress=True,
    )


def _agent_state(step: Step) -> dict[str, Any]:
    """Return the agent's state to store with the subtask: its conversation, usage and state, when it returned them."""
    fields = {"conversation": "conversation", "usage": "usage", "state": "agent_state"}
    return {column: value for name, column in fields.items() if (value := getattr(step, name, None)) is not None}


def retry_delay(retries: int, *, at_least: float | None = None) -> float:
    """Return the backoff before retry number `retries + 1`: base * 2^retries, capped.

    `at_least` (an agent's Retry-After) lengthens it. Capped below half the broker's
    visibility timeout too: Redis would deliver a countdown message held longer than that
    a second time.
    """
    cap = min(settings.EXECUTION_RETRY_BACKOFF_CAP_S, settings.CELERY_VISIBILITY_TIMEOUT_S / 2)
    backoff = settings.EXECUTION_RETRY_BACKOFF_BASE_S * 2**retries
    return float(min(cap, max(backoff, at_least or 0.0)))


# --- Runs that end without their worker: killed at the hard limit, or lost -------------------------


def subtask_hard_timeout(*, subtask_id: UUID, attempt: int, task_id: str, hard_limit_s: float) -> None:
    """Record that run `attempt` was killed at its hard time limit: a time-out, retried like any agent error.

    An agent that swallows the soft time limit (SoftTimeLimitExceeded is an Exception, so a
    broad `except Exception` does) runs on until the hard limit, where the pool kills its
    process. Unrecorded, the run would look lost (a dead process frees its lease), be sent
    again, and after EXECUTION_MAX_LOST_RUNS end as poison: the wrong error, and slowly.
    The worker's main process calls this (execution/tasks.py).
    """
    subtask = Subtask.objects.filter(pk=subtask_id, status=S.RUNNING, attempts=attempt).first()
    if subtask is None:
        # Settled or taken over meanwhile: nothing of this run is left to record. Killed after its
        # outcome, in the advance its worker had taken off its chain, the run leaves its plan to advance.
        plan_id = Subtask.objects.filter(pk=subtask_id).values_list("plan_id", flat=True).first()
        if plan_id is not None:
            canvas.send_advance(plan_id)
        return
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
    run = canvas.Run(
        subtask_id=subtask.pk, attempt=attempt + 1, task_id=task_id, timeout_s=timeout, agent=subtask.agent
    )
    canvas.send_runs(subtask.plan_id, [run], countdown=delay)


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
            reason=reason,
            fields={"lost_runs": lost_runs, "error": error},
            details={"error": error},
            progress=True,
        )
        failure_policy_apply(plan, subtask)
        return True
    dispatch(plan, [subtask], batch=False, reason=reason, fields={"lost_runs": lost_runs})
    return False


def lease_release(subtask_id: UUID, attempt: int) -> None:
    """Give back the lease of a run (taken by run_start)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(hashtext(%s), %s)", [str(subtask_id), attempt])


def leases_abandoned(runs: Iterable[tuple[UUID, int]]) -> set[UUID]:
    """Return the subtasks among (subtask, attempt) runs whose lease nobody holds: their workers are gone."""
    runs = list(runs)
    if not runs:
        return set()
    ids, attempts = [str(run[0]) for run in runs], [run[1] for run in runs]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, attempt FROM unnest(%s::uuid[], %s::int[]) AS run(id, attempt)"
            " WHERE pg_try_advisory_lock(hashtext(id::text), attempt)",
            [ids, attempts],
        )
        free = cursor.fetchall()
        if free:
            cursor.execute(
                "SELECT pg_advisory_unlock(hashtext(id::text), attempt)"
                " FROM unnest(%s::uuid[], %s::int[]) AS run(id, attempt)",
                [[str(row[0]) for row in free], [row[1] for row in free]],
            )
    return {row[0] for row in free}
