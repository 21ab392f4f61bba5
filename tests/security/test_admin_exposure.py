"""What staff see in the admin: no API token key, and no task result of a plan they may not see."""

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.urls import reverse
from django_celery_results.models import TaskResult
from rest_framework.authtoken.models import Token

from plans.models import Subtask
from tests.desk.support import client_for, staff, waiting_tool_call

pytestmark = pytest.mark.django_db


def with_permissions(user, *codenames: str):
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def token_admin_names() -> tuple[str, str]:
    """Return the URL name prefix and the model name of the admin that lists API tokens."""
    model = next(model for model in admin.site._registry if model._meta.concrete_model is Token)
    name = str(model._meta.model_name)
    return f"admin:{model._meta.app_label}_{name}_", name


@pytest.mark.parametrize("superuser", [False, True])
def test_token_keys_are_not_shown_to_staff_who_may_view_tokens(superuser):
    holder = staff("holder")
    key = Token.objects.create(user=holder).key
    urls, name = token_admin_names()
    viewer = with_permissions(staff("viewer", superuser=superuser), f"view_{name}", f"delete_{name}")
    client = client_for(viewer)
    listing = client.get(reverse(f"{urls}changelist"))
    assert listing.status_code == 200
    assert "holder" in listing.content.decode()
    page = client.get(reverse(f"{urls}change", args=[holder.pk]))
    assert page.status_code == 200
    for answer in (listing, page):
        assert key not in answer.content.decode()
        assert key[:8] not in answer.content.decode()
    # No token is made where its key would have to be shown.
    assert client.get(reverse(f"{urls}add")).status_code == 403


def test_task_results_of_plans_a_staff_user_may_not_see_are_hidden():
    approval = waiting_tool_call(staff("owner"), goal="Migrate the payroll database")
    Subtask.objects.filter(pk=approval.subtask_id).update(task_id="task-of-owner")
    result = TaskResult.objects.create(task_id="task-of-owner", task_name="execution.run_subtask", status="SUCCESS")
    bystander = with_permissions(staff("bystander"), "view_taskresult")
    client = client_for(bystander)
    listing = client.get(reverse("admin:django_celery_results_taskresult_changelist"))
    assert listing.status_code == 200
    assert listing.context["cl"].result_count == 0
    page = client.get(reverse("admin:django_celery_results_taskresult_change", args=[result.pk]), follow=True)
    assert "Migrate the payroll database" not in page.content.decode()
    # The plan's owner, given the same permission, sees the result of their own subtask.
    owner = with_permissions(approval.plan.owner, "view_taskresult")
    owners = client_for(owner).get(reverse("admin:django_celery_results_taskresult_change", args=[result.pk]))
    assert "Migrate the payroll database" in owners.content.decode()
