"""Load: 200 plans submitted at once through the API, one in five asking for approvals a client grants, all complete."""

import statistics
import threading
import time
from typing import Any

import pytest

from plans.models import Plan, PlanStatus, Subtask, SubtaskStatus
from tests.support.clients import HttpCaller, LocalCaller, approver, at_once
from tests.support.factories import UserFactory, plan_data, subtask
from tests.support.flows import FINISHED, wait_for
from tests.support.invariants import assert_invariants

# Under three minutes on two busy cores; the default five-minute limit leaves too little room.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("engine"), pytest.mark.timeout(480)]

PLANS_COUNT = 200
CLIENTS = 20
ASKS = {"tool_calls": [{"tool": "deploy", "arguments": {"env": "staging"}}]}
JOIN = {"callable": "tests.support.agents.dependency_keys"}


def shape(number: int) -> dict[str, Any]:
    """Return plan `number`: a chain, a fan-out or a diamond; every fifth one asks for an approval first."""
    first = {"input": ASKS} if number % 5 == 0 else {}
    if number % 3 == 0:
        subtasks = [subtask("c0", **first), subtask("c1", "c0"), subtask("c2", "c1"), subtask("c3", "c2")]
    elif number % 3 == 1:
        subtasks = [subtask("root", **first), *(subtask(f"f{leaf}", "root") for leaf in range(5))]
    else:
        subtasks = [
            subtask("top", **first),
            subtask("left", "top"),
            subtask("right", "top"),
            subtask("join", "left", "right", agent="python", input=JOIN),
        ]
    return plan_data(*subtasks, goal=f"Load plan {number}", session_id=f"load-{number}", requires_approval=False)


def grant_approvals_as_they_appear(caller: HttpCaller, stop: threading.Event, granted: list[str]) -> None:
    """Poll the pending tool-call approvals, as an IDE would, and approve each with the tool's result."""
    while not stop.is_set():
        page = caller.get("/api/v1/approvals/", {"status": "pending", "kind": "tool_call", "page_size": 100})
        for approval in page.body["results"]:
            answer = caller.post(f"/api/v1/approvals/{approval['id']}/approve/", {"result": f"ok {approval['id']}"})
            if answer.status == 200:
                granted.append(approval["id"])
        time.sleep(0.1)


def submit_share(caller, numbers: list[int]) -> list[str]:
    ids = []
    for number in numbers:
        answer = caller.post("/api/v1/plans/", shape(number))
        assert answer.status == 201, answer.body
        ids.append(answer.body["id"])
    return ids


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def approval_to_resume_seconds(plans: list[Plan]) -> list[float]:
    """Return, per granted tool call, the time from its decision to the start of the run it resumed."""
    latencies = []
    for plan in plans:
        for resolved in plan.events.filter(type="approval.resolved", payload__kind="tool_call"):
            key = resolved.payload["subtask_key"]
            resumed = plan.events.filter(seq__gt=resolved.seq, type="subtask.started", payload__subtask_key=key)
            decided_at = plan.approvals.get(pk=resolved.payload["approval_id"]).decided_at
            assert decided_at is not None
            latencies.append((resumed.order_by("seq")[0].created_at - decided_at).total_seconds())
    return latencies


def submit_all_at_once(web) -> tuple[list[str], float]:
    """Submit the plans from CLIENTS threads, each its own user; return their ids and how long it took."""
    users = [UserFactory(username=f"load{index}") for index in range(CLIENTS)]
    # Half over HTTP to uvicorn, half through this process: uvicorn alone takes requests one at a time.
    callers = [HttpCaller(web.url, user) if index % 2 else LocalCaller(user) for index, user in enumerate(users)]
    shares = [list(range(index, PLANS_COUNT, CLIENTS)) for index in range(CLIENTS)]
    started = time.monotonic()
    answers = at_once(
        *(lambda c=caller, s=share: submit_share(c, s) for caller, share in zip(callers, shares, strict=True))
    )
    return [plan_id for share in answers for plan_id in share], time.monotonic() - started


def assert_results(plans: list[Plan]) -> None:
    """Every subtask done; joins saw both sides; each granted tool result reached its subtask's result."""
    assert {plan.status for plan in plans} == {PlanStatus.COMPLETED}
    assert not Subtask.objects.filter(plan__in=plans).exclude(status=SubtaskStatus.DONE).exists()
    for plan in plans:
        results: dict[str, Any] = dict(plan.subtasks.values_list("key", "result"))
        if "join" in results:
            assert results["join"] == ["left", "right"]
        asking = plan.approvals.filter(kind="tool_call").select_related("subtask").first()
        if asking is not None and asking.subtask is not None:
            assert results[asking.subtask.key]["tool_results"] == [f"ok {asking.pk}"]


def test_two_hundred_concurrent_plans_complete_with_their_approvals_granted(web):
    stop, granted = threading.Event(), []
    granter = threading.Thread(
        target=grant_approvals_as_they_appear, args=(HttpCaller(web.url, approver("granter")), stop, granted)
    )
    granter.start()
    try:
        started = time.monotonic()
        ids, submitted = submit_all_at_once(web)
        unfinished = Plan.objects.filter(pk__in=ids).exclude(status__in=FINISHED)
        wait_for(lambda: not unfinished.exists(), timeout=360, interval=0.5, message="the plans to finish")
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        granter.join(30)

    plans = list(Plan.objects.filter(pk__in=ids))
    assert_invariants(plans)
    assert_results(plans)
    assert len(granted) == PLANS_COUNT // 5
    subtasks = sum(plan.subtask_count for plan in plans)
    latencies = approval_to_resume_seconds(plans)
    print(
        f"\nload: {PLANS_COUNT} plans ({subtasks} subtasks, {len(latencies)} approvals) from {CLIENTS} clients, "
        f"2 subtask workers x 2 processes: submitted in {submitted:.1f} s ({PLANS_COUNT / submitted:.0f} plans/s); "
        f"all completed in {elapsed:.1f} s ({PLANS_COUNT / elapsed:.1f} plans/s, {subtasks / elapsed:.0f} subtasks/s); "
        f"approval to resume p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms"
    )
