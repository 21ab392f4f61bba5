"""Provider limits against the real PostgreSQL and Redis: slots, the request window, hold-backs, and runs deferred."""

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection

from execution.agents.base import Finish
from execution.agents.definitions import agent_from_definition
from execution.agents.fields import DefinitionError
from execution.agents.limits import AgentLimits, agent_limits
from execution.engine.runs import RunDeferred, retry_delay
from execution.limits import (
    deferrals,
    hold_back,
    hold_remaining_s,
    model_call_admit,
    requests_last_minute,
    run_admit,
    slot_release,
    slot_take,
    slots_in_use,
)
from plans.models import SubtaskStatus as S
from tests.fakes.openai_server import completion, reply, tool_call
from tests.support.agent_contexts import READ_FILE, context
from tests.support.factories import subtask
from tests.support.flows import start, wait_for


def unique_agent() -> str:
    """An agent name no other test (or earlier run) has used: Redis keeps its keys between tests."""
    return f"limited-{uuid.uuid4().hex[:8]}"


class OtherConnection:
    """Another worker's database connection (a thread has its own): runs a function there, on demand."""

    def __init__(self) -> None:
        self._calls: list[tuple[Callable[[], Any], list[Any], threading.Event]] = []
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._closed = False
        self._thread.start()

    def _serve(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._calls or self._closed)
                if not self._calls:
                    break
                function, out, done = self._calls.pop(0)
            try:
                out.append(function())
            finally:
                done.set()
        connection.close()  # a worker's process gone: PostgreSQL drops its locks

    def run(self, function: Callable[[], Any]) -> Any:
        out: list[Any] = []
        done = threading.Event()
        with self._wake:
            self._calls.append((function, out, done))
            self._wake.notify()
        assert done.wait(10)
        return out[0] if out else None

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(10)


@pytest.fixture
def other_worker(transactional_db) -> Iterator[OtherConnection]:
    other = OtherConnection()
    yield other
    other.close()


# --- definitions ---------------------------------------------------------------------------------


def test_any_kind_may_set_max_concurrency_and_an_openai_agent_requests_per_minute():
    script = agent_from_definition("s", {"kind": "script", "max_concurrency": 2})
    model = agent_from_definition(
        "m", {"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "x", "requests_per_minute": 30}
    )

    assert agent_limits(script) == AgentLimits(max_concurrency=2)
    assert agent_limits(model) == AgentLimits(requests_per_minute=30, shares_retry_after=True)
    assert not agent_limits(agent_from_definition("plain", {"kind": "script"})).active


@pytest.mark.parametrize(
    ("definition", "field", "problem"),
    [
        ({"kind": "script", "max_concurrency": 0}, "max_concurrency", "must be at least 1"),
        ({"kind": "script", "max_concurrency": 1.5}, "max_concurrency", "must be an integer"),
        ({"kind": "script", "max_concurrency": True}, "max_concurrency", "must be an integer"),
        ({"kind": "http", "url": "http://x", "requests_per_minute": 5}, "requests_per_minute", "is not an option"),
        (
            {"kind": "openai", "base_url": "http://x", "model": "m", "requests_per_minute": "10"},
            "requests_per_minute",
            "must be an integer",
        ),
    ],
)
def test_a_wrong_limit_is_refused_naming_its_field(definition, field, problem):
    with pytest.raises(DefinitionError) as refused:
        agent_from_definition("a", definition)
    assert str(refused.value).startswith(f'"{field}" {problem}')


def test_a_wrong_limit_in_the_agents_file_names_the_agent_and_the_field(tmp_path, settings):
    from execution.agents.definitions import AgentsFileError, agents_file_read

    path = tmp_path / "agents.json"
    path.write_text(json.dumps({"busy": {"kind": "script", "max_concurrency": -1}}))
    with pytest.raises(AgentsFileError, match='agent "busy": "max_concurrency" must be at least 1'):
        agents_file_read(str(path))


# --- slots ---------------------------------------------------------------------------------------


def test_slots_are_shared_across_connections_and_freed_when_a_connection_dies(other_worker):
    agent = unique_agent()

    assert other_worker.run(lambda: slot_take(agent, 2)) == 0
    mine = slot_take(agent, 2)
    assert mine == 1
    assert slots_in_use({agent: 2}) == {agent: 2}

    other_worker.close()  # its process dies: its slot goes with its connection (once PostgreSQL has seen it go)
    wait_for(lambda: slots_in_use({agent: 2}) == {agent: 1}, timeout=10)
    slot_release(agent, mine)


def test_a_run_over_max_concurrency_is_not_admitted_until_a_slot_is_given_back(other_worker, settings):
    agent = unique_agent()
    limits = AgentLimits(max_concurrency=1)
    first = other_worker.run(lambda: run_admit(agent=agent, limits=limits))
    assert (first.admitted, first.slot) == (True, 0)

    refused = run_admit(agent=agent, limits=limits)
    assert (refused.admitted, refused.wait_s) == (False, settings.EXECUTION_LIMIT_DEFER_S)

    other_worker.run(lambda: slot_release(agent, first.slot))
    admitted = run_admit(agent=agent, limits=limits)
    assert (admitted.admitted, admitted.slot) == (True, 0)
    slot_release(agent, 0)
    assert slots_in_use({agent: 1}) == {agent: 0}


# --- the request window and hold-backs (Redis) ---------------------------------------------------


def test_the_request_window_lets_requests_per_minute_calls_through_then_says_how_long_to_wait():
    agent = unique_agent()
    limits = AgentLimits(requests_per_minute=3)
    for _ in range(3):
        assert run_admit(agent=agent, limits=limits).admitted  # looking takes nothing
        model_call_admit(agent=agent, limits=limits, deadline_s=0)
    assert requests_last_minute([agent]) == {agent: 3}

    over = run_admit(agent=agent, limits=limits)
    assert not over.admitted
    assert 0 < over.wait_s <= 60
    model_call_admit(agent=agent, limits=limits, deadline_s=0)  # gives up waiting at once: the call goes ahead
    assert requests_last_minute([agent]) == {agent: 3}


def test_a_retry_after_holds_back_every_run_of_the_agent_and_a_shorter_one_does_not_shorten_it():
    agent = unique_agent()
    limits = AgentLimits(shares_retry_after=True)

    hold_back(agent=agent, seconds=30)
    hold_back(agent=agent, seconds=1)

    assert 1 < hold_remaining_s(agent) <= 30
    held = run_admit(agent=agent, limits=limits)
    assert not held.admitted
    assert 1 < held.wait_s <= 30
    assert hold_remaining_s(unique_agent()) == 0
    assert run_admit(agent=agent, limits=AgentLimits(requests_per_minute=5)).admitted  # not sharing Retry-After


def test_a_model_call_waits_out_a_hold_back_in_its_run():
    agent = unique_agent()
    hold_back(agent=agent, seconds=0.3)

    model_call_admit(agent=agent, limits=AgentLimits(shares_retry_after=True), deadline_s=10)

    assert hold_remaining_s(agent) == 0


# --- runs deferred by the engine -----------------------------------------------------------------


@pytest.fixture
def limited_agent(tmp_path, settings) -> str:
    """A script agent allowed one run at once, known to this process."""
    name = unique_agent()
    path = tmp_path / "agents.json"
    path.write_text(json.dumps({name: {"kind": "script", "max_concurrency": 1}}))
    settings.EXECUTION_AGENTS_FILE = str(path)
    return name


def test_a_run_over_its_agents_limit_is_deferred_leaving_its_subtask_queued_and_its_retries_untouched(
    worker, outbox, other_worker, limited_agent
):
    plan = start(subtask("a", agent=limited_agent))
    run = outbox.only_run()
    other_worker.run(lambda: slot_take(limited_agent, 1))  # another run holds the agent's only slot
    before = deferrals().get(limited_agent, 0)
    events = plan.events.count()
    queued_at = plan.subtasks.get().queued_at

    with pytest.raises(RunDeferred) as deferred:
        worker.run(run)

    assert deferred.value.delay > 0
    waiting = plan.subtasks.get()
    assert (waiting.status, waiting.attempts, waiting.retries, waiting.error) == (S.QUEUED, 0, 0, "")
    assert waiting.queued_at > queued_at  # due again later: the reconciler waits for it
    assert plan.events.count() == events
    assert deferrals()[limited_agent] == before + 1

    other_worker.close()  # that run ends (its worker with it)
    wait_for(lambda: slots_in_use({limited_agent: 1}) == {limited_agent: 0}, timeout=10)
    assert worker.run(run) is None
    done = plan.subtasks.get()
    assert (done.status, done.attempts, done.retries) == (S.DONE, 1, 0)
    assert slots_in_use({limited_agent: 1}) == {limited_agent: 0}  # given back when the run ended


def test_a_stale_message_of_a_limited_agent_is_dropped_not_deferred(worker, outbox, other_worker, limited_agent):
    plan = start(subtask("a", agent=limited_agent))
    run = outbox.only_run()
    worker.run(run)
    other_worker.run(lambda: slot_take(limited_agent, 1))

    assert worker.run(run) is None  # a duplicate of the finished run: not held back, dropped as before
    assert plan.subtasks.get().status == S.DONE


# --- the openai agent ----------------------------------------------------------------------------


def test_every_model_call_of_an_openai_agent_takes_a_place_in_its_window(fake_openai, settings):
    name = unique_agent()
    agent = agent_from_definition(name, fake_openai.agent_definition(requests_per_minute=10, tools=[READ_FILE]))
    settings.EXECUTION_WORKSPACE_DIR = ""  # the worker tool answers with an error: a second call all the same
    fake_openai.script(completion(tool_calls=[tool_call("read_file", {"path": "x"})]), completion("Done"))

    step = agent.run(context())

    assert isinstance(step, Finish)
    assert requests_last_minute([name]) == {name: 2}


@pytest.fixture
def model_agent(fake_openai, tmp_path, settings) -> str:
    """An openai agent on the fake server, known to this process."""
    name = unique_agent()
    path = tmp_path / "agents.json"
    path.write_text(json.dumps({name: fake_openai.agent_definition(timeout_s=5)}))
    settings.EXECUTION_AGENTS_FILE = str(path)
    return name


def test_a_429_with_retry_after_holds_back_the_other_runs_of_the_agent(worker, outbox, fake_openai, model_agent):
    refusal = reply({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "30"})
    fake_openai.script(refusal, match="Do first")
    start(subtask("first", agent=model_agent, max_retries=1))
    first = outbox.only_run()
    start(subtask("second", agent=model_agent))
    second = outbox.only_run()

    assert worker.run(first) == retry_delay(0, at_least=30)  # the run that got it retries, as before
    assert 25 < hold_remaining_s(model_agent) <= 30
    with pytest.raises(RunDeferred) as deferred:
        worker.run(second)  # and the agent's other runs wait too

    assert 25 < deferred.value.delay <= 30
    assert len(fake_openai.requests()) == 1
