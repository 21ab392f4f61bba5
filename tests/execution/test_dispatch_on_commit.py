"""Dispatch happens only after the transaction commits, and never for rolled-back work."""

import json
from types import SimpleNamespace
from uuid import uuid4

import pytest
import redis
from celery import chain
from celery.app.defaults import DEFAULTS
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import LazySettings, settings
from django.db import OperationalError, transaction

from execution import canvas
from execution.engine import plan_flow
from execution.services import plan_submit
from plans.models import Plan, SubtaskStatus
from tests.support.factories import UserFactory, plan_data, subtask

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    """Record what would be sent to the broker instead of sending it."""
    batches: list[tuple] = []
    monkeypatch.setattr(canvas, "send_batch", lambda plan_id, runs: batches.append((plan_id, runs)))
    return batches


def test_the_first_batch_is_sent_after_commit(sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        plan = plan_submit(
            owner=UserFactory(), data=plan_data(subtask("a"), subtask("b"), subtask("c", "a"), requires_approval=False)
        )
    assert sent == []
    assert dict(plan.subtasks.values_list("key", "status")) == {"a": "queued", "b": "queued", "c": "pending"}

    for callback in callbacks:
        callback()
    [(plan_id, runs)] = sent
    assert plan_id == plan.pk
    a, b = plan.subtasks.get(key="a"), plan.subtasks.get(key="b")
    assert [(run.subtask_id, run.attempt, run.task_id) for run in runs] == [(a.pk, 1, a.task_id), (b.pk, 1, b.task_id)]


def test_nothing_is_sent_for_a_rolled_back_transaction(sent, django_capture_on_commit_callbacks):
    def submit_then_fail():
        with transaction.atomic():
            plan_submit(owner=UserFactory(), data=plan_data(subtask("a"), requires_approval=False))
            raise RuntimeError("rolled back")

    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(RuntimeError):
        submit_then_fail()
    assert callbacks == []
    assert sent == []
    assert not Plan.objects.exists()


def test_a_plan_needing_approval_sends_nothing(sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        plan = plan_submit(owner=UserFactory(), data=plan_data(subtask("a")))
    assert sent == []
    assert plan.subtasks.get().status == SubtaskStatus.PENDING


def test_runs_sent_while_held_go_out_together_when_the_hold_ends(monkeypatch):
    published: list[str] = []

    def run_signature(run, **options):
        return SimpleNamespace(apply_async=lambda **sent: published.append(str(run.subtask_id)))

    monkeypatch.setattr(canvas, "run_signature", run_signature)
    runs = [canvas.Run(subtask_id=uuid4(), attempt=1, task_id=str(uuid4()), timeout_s=10) for _ in range(2)]
    with canvas.sends_held():
        canvas.send_runs(uuid4(), runs[:1])
        canvas.send_runs(uuid4(), runs[1:])
        assert published == []
    assert published == [str(run.subtask_id) for run in runs]
    canvas.send_runs(uuid4(), runs[:1])
    assert len(published) == 3


def test_a_single_run_goes_out_as_the_message_of_its_chain_with_the_advance(monkeypatch):
    # send_runs gives Celery the run with its advance in the "chain" option rather than a canvas
    # to build: the message must be the one chain(run, advance) sends, with the limits and queues.
    published: list[tuple[str, dict, dict]] = []

    def capture(producer, name, message, **options):
        _args, kwargs, embed = message.body
        published.append((name, kwargs, {**options, "chain": embed["chain"], "headers": message.headers}))

    amqp = canvas.current_app.amqp
    monkeypatch.setattr(amqp, "send_task_message", capture)
    run = canvas.Run(subtask_id=uuid4(), attempt=2, task_id=str(uuid4()), timeout_s=10, agent="script")
    plan_id = uuid4()
    canvas.send_runs(plan_id, [run])
    chain(canvas.run_signature(run), canvas.advance_signature(plan_id)).apply_async()
    sent, built = published
    for name, kwargs, options in (sent, built):
        assert name == canvas.RUN_SUBTASK
        assert kwargs == {"subtask_id": str(run.subtask_id), "attempt": 2, "agent": "script"}
        assert options["queue"].name == "subtasks"
        assert options["headers"]["id"] == run.task_id
        assert list(options["headers"]["timelimit"]) == [10 + settings.EXECUTION_HARD_LIMIT_GRACE_S, 10]
        assert (options["headers"]["argsrepr"], options["headers"]["kwargsrepr"]) == ("()", repr(kwargs))
        [advance] = options["chain"]
        assert (advance["task"], advance["kwargs"], advance["options"]["queue"]) == (
            canvas.ADVANCE_PLAN,
            {"plan_id": str(plan_id)},
            "control",
        )
        assert advance["immutable"]


def test_a_run_sent_on_redis_declares_nothing_and_on_other_brokers_what_celery_declares(monkeypatch):
    # On Redis a task goes through the default exchange onto its queue's list: there is nothing
    # to declare, and checking cost a fifth of a send. Another broker declares the queue first.
    declared: list = []
    monkeypatch.setattr(
        canvas.current_app.amqp, "send_task_message", lambda *args, **options: declared.append(options["declare"])
    )
    run = canvas.Run(subtask_id=uuid4(), attempt=1, task_id=str(uuid4()), timeout_s=10)
    canvas.send_runs(uuid4(), [run])
    canvas.send_webhooks(uuid4(), [1])
    assert declared == [[], []]

    amqp_producer = SimpleNamespace(connection=SimpleNamespace(transport=SimpleNamespace(driver_type="amqp")))
    assert canvas._declare(amqp_producer) is None


def test_the_worker_takes_a_runs_advance_off_its_chain_only_when_it_is_the_last_step():
    plan_id = uuid4()
    advance = dict(canvas.advance_signature(plan_id))
    chain_left = [json.loads(json.dumps(advance))]  # as the message carries it
    assert canvas.advance_taken(chain_left) == plan_id
    assert chain_left == []  # taken: Celery sends nothing more
    for untouched in (None, [], [advance, advance], [dict(advance, task=canvas.RUN_SUBTASK)]):
        before = json.dumps(untouched)
        assert canvas.advance_taken(untouched) is None
        assert json.dumps(untouched) == before


@pytest.mark.parametrize("failure", [SoftTimeLimitExceeded(), OperationalError("the server closed the connection")])
def test_an_advance_that_fails_in_the_runs_worker_is_sent_to_the_control_queue(monkeypatch, failure):
    # The run's soft time limit may come during the advance; a connection may be lost: the
    # advance then goes out as the chain would have sent it.
    plan_id = uuid4()
    sent_advances: list = []

    def advance_fails(*, plan_id):
        raise failure

    monkeypatch.setattr(plan_flow, "plan_advance", advance_fails)
    monkeypatch.setattr(canvas, "send_advance", sent_advances.append)
    plan_flow.plan_advance_after_run(plan_id=plan_id)
    assert sent_advances == [plan_id]


@pytest.fixture
def subtasks_queue():
    """The broker's lists of the "subtasks" queue (one per priority step); what a test leaves there is taken out."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    taken: set[str] = set()

    def queued() -> dict[str, tuple[bytes, bytes]]:
        found = {}
        for key in client.scan_iter(match="subtasks*"):
            for raw in client.lrange(key, 0, -1):
                found[json.loads(raw)["headers"]["id"]] = (key, raw)
        return found

    yield SimpleNamespace(queued=queued, taken=taken)
    for task_id, (key, raw) in queued().items():
        if task_id in taken:
            client.lrem(key, 1, raw)
    client.close()


def test_the_messages_of_one_publishing_block_reach_the_broker_together_as_it_ends(subtasks_queue):
    runs = [canvas.Run(subtask_id=uuid4(), attempt=1, task_id=str(uuid4()), timeout_s=10) for _ in range(3)]
    task_ids = {run.task_id for run in runs}
    subtasks_queue.taken.update(task_ids)

    with canvas.publishing():
        canvas.send_runs(uuid4(), runs[:2])  # resumes
        with canvas.sends_held():
            canvas.send_runs(uuid4(), runs[2:])  # held, then sent in the same batch
        assert task_ids.isdisjoint(subtasks_queue.queued())

    assert task_ids <= subtasks_queue.queued().keys()


def test_a_request_that_sends_nothing_takes_no_producer(client, monkeypatch):
    taken: list[object] = []
    app_class = type(canvas.current_app._get_current_object())
    original = app_class.producer_or_acquire

    def counted(app, producer=None):
        taken.append(producer)
        return original(app, producer)

    monkeypatch.setattr(app_class, "producer_or_acquire", counted)
    assert client.get("/api/v1/agents/").status_code == 401  # through the middleware that holds the runs

    with canvas.sends_held():
        pass
    assert taken == []
    monkeypatch.setattr(canvas, "run_signature", lambda run, **options: SimpleNamespace(apply_async=dict))
    with canvas.sends_held():
        canvas.send_runs(uuid4(), [canvas.Run(subtask_id=uuid4(), attempt=1, task_id="t", timeout_s=10)])
    assert len(taken) == 1  # one producer for what was held


def test_a_send_outside_any_block_reaches_the_broker_as_it_returns(subtasks_queue):
    run = canvas.Run(subtask_id=uuid4(), attempt=1, task_id=str(uuid4()), timeout_s=10)
    subtasks_queue.taken.add(run.task_id)

    canvas.send_runs(uuid4(), [run])

    assert run.task_id in subtasks_queue.queued()


def test_celery_reads_each_of_its_settings_from_djangos_once(monkeypatch):
    conf = canvas.current_app.conf
    assert conf.task_default_queue == settings.CELERY_TASK_DEFAULT_QUEUE  # loaded, as Django's settings say
    missed: list[str] = []
    original = LazySettings.__getattr__

    def counted(self, name):
        missed.append(name)  # Django caches what it finds: only names it does not have come here
        return original(self, name)

    monkeypatch.setattr(LazySettings, "__getattr__", counted)
    values = {key: conf[key] for key in DEFAULTS}

    assert missed == []
    assert (values["task_routes"], values["worker_prefetch_multiplier"]) == (
        settings.CELERY_TASK_ROUTES,
        settings.CELERY_WORKER_PREFETCH_MULTIPLIER,
    )
