"""The only module that builds Celery canvases: a chord per batch, a chain per single run.

Tasks are referenced by name, so this module does not import the task module (which
imports the engine, which uses this module). Each canvas is built when it is sent:
never the whole plan up front, so no message carries the rest of the plan. Runs sent one
by one (a decision's resumes, those held by sends_held) and webhook deliveries go out
through one producer in one kombu publish batch: on Redis, one pipeline for all of them.
"""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any
from uuid import UUID

from celery import chord, current_app, group, signature
from celery.canvas import Signature
from django.conf import settings
from kombu import Producer

from common.context import context_bound

RUN_SUBTASK = "execution.run_subtask"
ADVANCE_PLAN = "execution.advance_plan"
DELIVER_WEBHOOK = "execution.deliver_webhook"

# Runs sent one by one (a decision's resume, a retry, a re-sent message) go before the batches
# already waiting in the "subtasks" queue, so a person's decision does not wait behind a backlog.
# On Redis a lower priority number is taken first (kombu keeps one list per step: 0, 3, 6, 9);
# batch runs take a later step, single runs the default, 0. RabbitMQ ignores it, as the queues
# declare no x-max-priority (where declared, it takes the higher number first).
BATCH_PRIORITY = 6

logger = logging.getLogger(__name__)
_held: ContextVar[list[Callable[[], None]] | None] = ContextVar("sends_held", default=None)
_producer: ContextVar[Producer | None] = ContextVar("publishing", default=None)


@dataclass(frozen=True)
class Run:
    """One dispatch of a subtask: which attempt it is, under which task id, how long it may take."""

    subtask_id: UUID
    attempt: int
    task_id: str
    timeout_s: int
    # The subtask's agent, so a run whose agent has no limits is started without reading it first.
    agent: str = ""


def run_signature(run: Run, *, priority: int = 0) -> Signature:
    """Return the signature of one run, with its soft and hard time limits."""
    kwargs: dict[str, object] = {"subtask_id": str(run.subtask_id), "attempt": run.attempt}
    if run.agent:
        kwargs["agent"] = run.agent
    return signature(
        RUN_SUBTASK,
        kwargs=kwargs,
        # What Flower and the logs show of the arguments, written here: Celery's bounded repr of
        # any value took a tenth of a send, and these are a few short strings and a number.
        argsrepr="()",
        kwargsrepr=repr(kwargs),
        task_id=run.task_id,
        queue="subtasks",
        priority=priority,
        soft_time_limit=run.timeout_s,
        time_limit=run.timeout_s + settings.EXECUTION_HARD_LIMIT_GRACE_S,
        immutable=True,
    )


def advance_signature(plan_id: UUID) -> Signature:
    return signature(ADVANCE_PLAN, kwargs={"plan_id": str(plan_id)}, queue="control", immutable=True)


@contextmanager
def publishing() -> Iterator[Producer]:
    """Send the messages published in this block through one producer, in one batch, as the block ends.

    kombu's publish batch: on Redis, the block's LPUSHes go out in one pipeline, a third of
    the CPU of sending each on its own (other transports publish each at once). A batch that
    cannot be sent is lost as a whole, as a lost publish is: the reconciler re-sends the
    queued subtasks whose message never came. Nested blocks join the outermost one's batch.
    """
    producer = _producer.get()
    if producer is not None:
        yield producer
        return
    with current_app.producer_or_acquire() as producer, producer.batch(), context_bound(_producer, producer):
        yield producer


@contextmanager
def sends_held() -> Iterator[None]:
    """Hold the runs sent inside this block (by the commits of several transactions) and send them as it ends.

    Many decisions made in a few transactions resume their subtasks together, as one
    transaction's would. A run reaches the hold only once its transaction has committed.
    """
    held: list[Callable[[], None]] = []
    try:
        with context_bound(_held, held):
            yield
    finally:
        if held:  # a block that sent nothing (a read, a refusal) takes no producer from the pool
            _held_send(held)


def _held_send(held: list[Callable[[], None]]) -> None:
    """Send what a hold kept, in one publish batch."""
    # As on_commit(robust=True): a send that fails is logged; the reconciler re-sends what stays queued.
    try:
        with publishing():
            for send in held:
                try:
                    send()
                except Exception:
                    logger.exception("Sending held runs failed")
    except Exception:  # the batch itself
        logger.exception("Sending held runs failed")


def _hold(send: Callable[[], None]) -> bool:
    held = _held.get()
    if held is None:
        return False
    held.append(send)
    return True


def send_batch(plan_id: UUID, runs: list[Run]) -> None:
    """Send a batch as one chord: its runs in parallel, then advance the plan."""
    if _hold(partial(send_batch, plan_id, runs)):
        return
    # Not in a publish batch: chord.apply_async publishes its runs with a producer of its own.
    chord(group(run_signature(run, priority=BATCH_PRIORITY) for run in runs), advance_signature(plan_id)).apply_async()


def send_runs(plan_id: UUID, runs: list[Run], *, countdown: float | None = None) -> None:
    """Send runs one by one (a resume, a retry, a re-dispatch), each followed by an advance."""
    if _hold(partial(send_runs, plan_id, runs, countdown=countdown)):
        return
    with publishing() as producer:
        for run in runs:
            first = run_signature(run)
            if countdown is not None:
                first.set(countdown=countdown)
            # The message chain(first, advance) sends: the run carries its advance in its "chain"
            # field, which the worker sends when the run succeeds (a retry keeps it). Given so,
            # Celery skips building and freezing the canvas, about a quarter of the cost of sending.
            first.apply_async(chain=[advance_signature(plan_id)], producer=producer, declare=_declare(producer))


def _declare(producer: Producer) -> list[Any] | None:
    """Return what a publish through `producer` declares first: nothing on Redis, Celery's default elsewhere.

    Celery sends a task to its queue through the default exchange, which on Redis is a push
    onto the queue's list: nothing needs declaring. Declaring anyway costs no round trip
    (kombu remembers what a connection declared) but checking so copied the queue and its
    exchange and wrapped the check in a retry, a fifth of a send's CPU. On other brokers the
    queue is declared as Celery does, so a message sent before any worker declared it is kept.
    """
    connection = producer.connection
    return [] if connection is not None and connection.transport.driver_type == "redis" else None


def send_advance(plan_id: UUID) -> None:
    advance_signature(plan_id).apply_async()


def advance_taken(chain: list[dict[str, Any]] | None) -> UUID | None:
    """Take a run's advance off its chain when it is the chain's last step; return the advance's plan id.

    `chain` is the running task's (request.chain, the steps still to send, the next one
    last): the step taken is not sent, and the worker that ran the subtask advances the plan
    itself, without a message to the control queue and a second task. Anything else on the
    chain is left for Celery to send.
    """
    if not chain or len(chain) != 1 or chain[-1].get("task") != ADVANCE_PLAN:
        return None
    return UUID(chain.pop()["kwargs"]["plan_id"])


def send_webhooks(plan_id: UUID, seqs: list[int]) -> None:
    """Send one webhook delivery per event (queue "webhooks")."""
    with publishing() as producer:
        for seq in seqs:
            delivery = signature(DELIVER_WEBHOOK, kwargs={"plan_id": str(plan_id), "seq": seq}, queue="webhooks")
            delivery.apply_async(producer=producer, declare=_declare(producer))


def revoke(task_ids: list[str]) -> None:
    """Revoke runs: queued ones are discarded on arrival, running ones terminated.

    Best effort (workers that start later never hear of it); the (status, attempt) fence
    is what guarantees a revoked run's late outcome changes nothing.
    """
    current_app.control.revoke(task_ids, terminate=True, signal="SIGTERM")
