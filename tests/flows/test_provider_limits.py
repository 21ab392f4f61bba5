"""Provider limits through real workers: at most max_concurrency runs at once, a Retry-After shared by every run."""

import pytest

from execution.limits import deferrals, hold_remaining_s
from plans.models import PlanStatus, SubtaskStatus
from tests.fakes.openai_server import completion, reply
from tests.support.factories import subtask
from tests.support.flows import finished, start, wait_for

pytestmark = pytest.mark.usefixtures("engine")


@pytest.fixture
def llm(fake_openai, test_agents, settings):
    """The fake model, reset, with the test agents known to this process too (plans are checked where submitted)."""
    settings.EXECUTION_AGENTS_FILE = str(test_agents.path)
    return fake_openai


def test_ten_runs_of_an_agent_allowed_two_at_once_never_overlap_more_and_wait_without_holding_a_worker(llm):
    # Four worker processes; each model call takes a while, so runs over the limit have to wait.
    llm.script(*[reply(completion("done"), delay_s=1.5) for _ in range(10)], match="Paired work")
    before = deferrals().get("llm_pair", 0)
    limited = start(
        *[subtask(f"p{i}", agent="llm_pair", description=f"Paired work {i}") for i in range(10)], max_parallel=10
    )
    wait_for(lambda: len(llm.requests(match="Paired work")) >= 2)

    # Waiting runs hold no worker: another plan's runs go through while most of them still wait.
    other = finished(start(*[subtask(f"s{i}") for i in range(4)]))
    not_done = limited.subtasks.exclude(status=SubtaskStatus.DONE).count()

    assert other.status == PlanStatus.COMPLETED
    assert not_done >= 4
    limited = finished(limited, timeout=120)
    assert limited.status == PlanStatus.COMPLETED
    requests = llm.requests(match="Paired work")
    assert len(requests) == 10
    assert max(request["concurrent"] for request in requests) == 2
    # A deferral is neither an attempt nor a retry.
    assert {(run.attempts, run.retries) for run in limited.subtasks.all()} == {(1, 0)}
    assert deferrals()["llm_pair"] > before


def test_a_429_with_retry_after_holds_back_the_other_runs_of_the_agent_until_then(llm):
    refusal = reply({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "2"})
    llm.script(refusal, completion("first done"), match="First caller")
    llm.script(completion("second done"), match="Second caller")
    first = start(subtask("first", agent="llm_held", description="First caller", max_retries=2))
    wait_for(lambda: hold_remaining_s("llm_held") > 0)

    second = start(subtask("second", agent="llm_held", description="Second caller"))

    first, second = finished(first), finished(second)
    assert (first.status, second.status) == (PlanStatus.COMPLETED, PlanStatus.COMPLETED)
    refused, retried = llm.requests(match="First caller")
    [asked] = llm.requests(match="Second caller")
    # Not before the Retry-After is over (the retry's own backoff is capped below it in the tests' settings).
    assert asked["at"] - refused["at"] >= 1.9
    assert retried["at"] - refused["at"] >= 1.9
    waited = second.subtasks.get()
    assert (waited.attempts, waited.retries, waited.result["content"]) == (1, 0, "second done")
