"""Test data: users and plans built through the same validation as real submissions."""

from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db.models import Count, Q

from execution.events import counter
from plans.models import Plan, Subtask, SubtaskStatus
from plans.services import plan_create
from plans.validation import validate_plan


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """PBKDF2 at one iteration, for test users: any process verifies it (the count is in the hash), at no cost."""

    iterations = 1


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.django.Password("pw-for-tests")


def subtask(key: str, *depends_on: str, agent: str = "script", **fields: Any) -> dict[str, Any]:
    """Return a subtask as a client would submit it."""
    return {"key": key, "description": f"Do {key}", "agent": agent, "depends_on": list(depends_on), **fields}


def plan_data(*subtasks: dict[str, Any], goal: str = "Test goal", **fields: Any) -> dict[str, Any]:
    """Return a plan as a client would submit it."""
    return {"goal": goal, "subtasks": list(subtasks), **fields}


def draft_plan(owner=None, *subtasks: dict[str, Any], **fields: Any) -> Plan:
    """Store a draft plan without any of the submission side effects."""
    spec = validate_plan(plan_data(*(subtasks or (subtask("a"),)), **fields), agents={"script", "python"})
    return plan_create(owner=owner or UserFactory(), spec=spec)


def plan_recount(*, plan_id) -> None:
    """Set a plan's counters from its subtasks, after a test has set their statuses by hand."""
    counts = Subtask.objects.filter(plan_id=plan_id).aggregate(
        total=Count("pk"), **{counter(status): Count("pk", filter=Q(status=status)) for status in SubtaskStatus.values}
    )
    Plan.objects.filter(pk=plan_id).update(subtask_count=counts.pop("total"), **counts)
