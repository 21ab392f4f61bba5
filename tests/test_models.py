"""The database enforces the data model's rules, whatever code writes to it."""

import pytest
from django.db import IntegrityError, transaction

from approvals.models import Approval
from execution.models import ExecutionState
from plans.models import Plan, PlanRevision, Subtask, SubtaskDependency
from tests.support.factories import draft_plan, subtask

pytestmark = pytest.mark.django_db


def violates(statement) -> bool:
    try:
        with transaction.atomic():
            statement()
    except IntegrityError:
        return True
    return False


def test_subtask_keys_are_unique_per_plan():
    plan = draft_plan(None, subtask("a"))
    assert violates(
        lambda: Subtask.objects.create(plan=plan, key="a", description="d", agent="script", position=1, batch_index=0)
    )
    other = draft_plan(None, subtask("a"))
    assert other.subtasks.get().key == "a"


def test_statuses_must_be_known():
    plan = draft_plan()
    assert violates(lambda: Plan.objects.filter(pk=plan.pk).update(status="done"))
    assert violates(lambda: plan.subtasks.update(status="finished"))
    assert violates(lambda: ExecutionState.objects.create(plan=plan, state="sleeping"))
    assert violates(lambda: Approval.objects.create(plan=plan, kind="plan", status="maybe"))


def test_max_parallel_is_bounded():
    plan = draft_plan()
    assert violates(lambda: Plan.objects.filter(pk=plan.pk).update(max_parallel=0))
    assert violates(lambda: Plan.objects.filter(pk=plan.pk).update(max_parallel=65))


def test_a_subtask_cannot_depend_on_itself():
    task = draft_plan().subtasks.get()
    assert violates(lambda: SubtaskDependency.objects.create(subtask=task, depends_on=task))


def test_one_pending_plan_approval_per_plan():
    plan = draft_plan()
    Approval.objects.create(plan=plan, kind="plan")
    assert violates(lambda: Approval.objects.create(plan=plan, kind="plan"))
    Approval.objects.filter(plan=plan).update(status="approved")
    Approval.objects.create(plan=plan, kind="plan")


def test_tool_call_approvals_need_a_subtask():
    plan = draft_plan()
    assert violates(lambda: Approval.objects.create(plan=plan, kind="tool_call", tool="shell"))
    task = plan.subtasks.get()
    assert violates(lambda: Approval.objects.create(plan=plan, subtask=task, kind="plan"))
    assert violates(lambda: Approval.objects.create(plan=plan, subtask=task, kind="tool_call", tool="shell"))
    Approval.objects.create(plan=plan, subtask=task, kind="tool_call", tool="shell", call_index=0)


def test_dependencies_are_stored_for_each_edge():
    plan = draft_plan(None, subtask("a"), subtask("b", "a"), subtask("c", "a", "b"))
    c = plan.subtasks.get(key="c")
    assert sorted(c.depends_on.values_list("key", flat=True)) == ["a", "b"]
    assert list(plan.subtasks.order_by("batch_index", "position").values_list("key", "batch_index")) == [
        ("a", 0),
        ("b", 1),
        ("c", 2),
    ]


def test_a_plan_has_one_revision_of_each_number_counted_from_1():
    plan = draft_plan()
    assert violates(lambda: PlanRevision.objects.create(plan=plan, revision=1, content={}))
    assert violates(lambda: PlanRevision.objects.create(plan=plan, revision=0, content={}))
    PlanRevision.objects.create(plan=plan, revision=2, content={})
