"""The engine without workers: what it would send, captured where canvas.py sends it, and delivered in this process.

    outbox    every chord, chain, advance, revoke and webhook the engine sends after commit
    worker    runs those messages here, calling the engine's functions as the Celery tasks do

The engine is the real one, against the real database; only the broker is left out, so a
test decides when each message arrives (and can deliver one twice, late, or never).
"""

from dataclasses import dataclass, field
from uuid import UUID

import pytest
from django.conf import settings
from django.utils import timezone

from execution import canvas
from execution.engine.plan_flow import plan_advance
from execution.engine.runs import lease_release, subtask_run
from execution.run_statements import run_start


@dataclass(frozen=True)
class Message:
    """One thing sent: a batch's chord, a run's chain (run then advance), an advance, a revoke or a webhook."""

    kind: str
    plan_id: UUID | None = None
    runs: tuple[canvas.Run, ...] = ()
    countdown: float | None = None
    task_ids: tuple[str, ...] = ()


@dataclass
class Outbox:
    """The messages sent since the last take(), in order."""

    messages: list[Message] = field(default_factory=list)

    def take(self) -> list[Message]:
        """Return the messages sent so far and forget them."""
        taken, self.messages = self.messages, []
        return taken

    def kinds(self) -> list[str]:
        return [message.kind for message in self.messages]

    def runs(self) -> list[canvas.Run]:
        """Return the runs of the batches and chains sent so far, in order."""
        return [run for message in self.messages for run in message.runs]

    def revoked(self) -> list[str]:
        return [task_id for message in self.messages for task_id in message.task_ids]

    def only_run(self) -> canvas.Run:
        """Return the one run sent so far, and forget what was sent."""
        [run] = self.runs()
        self.take()
        return run


class InProcessWorker:
    """Delivers captured messages as a worker would: a run (retried as the task retries), then its advance."""

    NAME = "in-process@test:1"

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def run(self, run: canvas.Run, *, attempt: int | None = None) -> float | None:
        """Run one attempt (the run's own by default), as run_subtask does; return the retry's delay, if any."""
        return subtask_run(
            subtask_id=run.subtask_id, attempt=attempt or run.attempt, worker=self.NAME, agent_name=run.agent
        )

    def deliver(self, message: Message) -> None:
        """Do what the workers do with one message; revoked runs are discarded, as Celery discards them."""
        if message.kind not in ("batch", "run", "advance"):
            return
        revoked = set(self.outbox.revoked())
        for run in message.runs:
            if run.task_id in revoked:
                continue
            attempt = run.attempt
            # run_subtask retries itself as the next attempt of the same task (the countdown is not waited for).
            while self.run(run, attempt=attempt) is not None:
                attempt += 1
        assert message.plan_id is not None
        plan_advance(plan_id=message.plan_id)  # the chord's callback, or the chain's second link

    def drain(self, *, limit: int = 100) -> None:
        """Deliver what is sent, and what that sends, until nothing is left."""
        for _ in range(limit):
            messages = [message for message in self.outbox.take() if message.kind in ("batch", "run", "advance")]
            if not messages:
                return
            for message in messages:
                self.deliver(message)
        raise AssertionError(f"Still sending after {limit} rounds")


def start_and_lose(run: canvas.Run) -> None:
    """Start a run as a worker does, then lose it with its worker: the subtask is running, its lease free."""
    found = run_start(
        subtask_id=run.subtask_id,
        attempt=run.attempt,
        worker="gone@host:1",
        now=timezone.now(),
        timeout_s=settings.EXECUTION_DEFAULT_TIMEOUT_S,
        lease_extra_s=1,
        max_context=settings.EXECUTION_MAX_CONTEXT_BYTES,
    )
    assert found is not None
    assert found.row is not None
    lease_release(run.subtask_id, run.attempt)


@pytest.fixture
def outbox(monkeypatch: pytest.MonkeyPatch) -> Outbox:
    """Capture what the engine sends to the broker instead of sending it."""
    box = Outbox()

    def send_batch(plan_id: UUID, runs: list[canvas.Run]) -> None:
        box.messages.append(Message("batch", plan_id, tuple(runs)))

    def send_runs(plan_id: UUID, runs: list[canvas.Run], *, countdown: float | None = None) -> None:
        box.messages.extend(Message("run", plan_id, (run,), countdown) for run in runs)

    monkeypatch.setattr(canvas, "send_batch", send_batch)
    monkeypatch.setattr(canvas, "send_runs", send_runs)
    monkeypatch.setattr(canvas, "send_advance", lambda plan_id: box.messages.append(Message("advance", plan_id)))
    monkeypatch.setattr(
        canvas, "revoke", lambda task_ids: box.messages.append(Message("revoke", None, (), None, tuple(task_ids)))
    )
    monkeypatch.setattr(canvas, "send_webhooks", lambda plan_id, seqs: box.messages.append(Message("webhook", plan_id)))
    return box


@pytest.fixture
def worker(outbox: Outbox, transactional_db: None) -> InProcessWorker:
    """Deliver captured messages in this process; the database commits for real, as the hot path needs."""
    return InProcessWorker(outbox)
