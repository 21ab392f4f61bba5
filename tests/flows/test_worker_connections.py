"""Workers started as documented keep their database connection from task to task."""

from collections import defaultdict

import pytest

from execution.services import plan_submit
from plans.models import PlanStatus
from tests.support.factories import UserFactory, plan_data, subtask
from tests.support.flows import finished

pytestmark = pytest.mark.usefixtures("engine")

SESSION = {"callable": "tests.support.agents.database_session"}


def test_a_worker_with_nothing_set_runs_its_tasks_on_one_connection_per_process():
    # A chain, so that each pool process runs several of the subtasks one after another.
    keys = [f"s{i}" for i in range(12)]
    subtasks = [subtask(key, *keys[i - 1 : i], agent="python", input=SESSION) for i, key in enumerate(keys)]
    plan = plan_submit(owner=UserFactory(), data=plan_data(*subtasks, requires_approval=False))
    plan = finished(plan)
    assert plan.status == PlanStatus.COMPLETED

    backends = defaultdict(set)
    runs = defaultdict(int)
    for result in plan.subtasks.values_list("result", flat=True):
        backends[result["process"]].add(result["backend"])
        runs[result["process"]] += 1
    assert max(runs.values()) > 1, runs
    # Django's default age of 0 would connect anew for every task: one backend per run.
    assert all(len(backends[process]) == 1 for process in backends), dict(backends)


def test_a_run_whose_database_connection_was_cut_records_its_outcome_on_a_new_one():
    # The agent has PostgreSQL end the worker's connection between the run's start and its outcome, as a
    # restart would; the next task runs right after it, within the time a worker skips its health check.
    cut = {"callable": "tests.support.agents.connection_cut"}
    data = plan_data(
        subtask("cut", agent="python", input=cut),
        subtask("after", "cut", agent="python", input=SESSION),
        requires_approval=False,
    )
    plan = finished(plan_submit(owner=UserFactory(), data=data))
    assert plan.status == PlanStatus.COMPLETED
    runs = dict(plan.subtasks.values_list("key", "attempts"))
    assert runs == {"cut": 1, "after": 1}, runs
