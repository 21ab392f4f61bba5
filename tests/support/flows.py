"""Helpers for tests with real workers: submit plans and wait for what the workers do."""

import time
from collections.abc import Callable
from typing import Any

from approvals.models import Approval, ApprovalStatus
from execution.services import plan_submit
from plans.models import Plan, Subtask
from tests.support.factories import UserFactory, plan_data

FINISHED = ("completed", "failed", "cancelled")


def wait_for(predicate: Callable[[], Any], *, timeout: float = 30, interval: float = 0.05, message: str = "") -> Any:
    """Return the predicate's first truthy value, polling the database (tests only)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


def start(*subtasks: dict[str, Any], owner=None, **fields: Any) -> Plan:
    """Submit a plan that needs no approval, so it starts at once."""
    fields.setdefault("requires_approval", False)
    return plan_submit(owner=owner or UserFactory(), data=plan_data(*subtasks, **fields))


def finished(plan: Plan, timeout: float = 60) -> Plan:
    wait_for(
        lambda: Plan.objects.get(pk=plan.pk).status in FINISHED, timeout=timeout, message=f"plan {plan.pk} to finish"
    )
    return Plan.objects.select_related("execution").get(pk=plan.pk)


def subtask_in(plan: Plan, key: str, *statuses: str, timeout: float = 30) -> Subtask:
    return wait_for(
        lambda: Subtask.objects.filter(plan=plan, key=key, status__in=statuses).first(),
        timeout=timeout,
        message=f"{key} to be {'/'.join(statuses)}",
    )


def pending_approval(plan: Plan, key: str, timeout: float = 30) -> Approval:
    return wait_for(
        lambda: Approval.objects.filter(plan=plan, subtask__key=key, status=ApprovalStatus.PENDING).first(),
        timeout=timeout,
        message=f"an approval for {key}",
    )


def event_types(plan: Plan) -> list[str]:
    return list(plan.events.order_by("seq").values_list("type", flat=True))
