"""The read-only execution pages (states, transitions, events, Celery task results) and the admin index."""

import pytest
from django.urls import reverse
from django_celery_results.models import TaskResult

from execution.models import Event, ExecutionState, StateTransition
from tests.desk.support import client_for, waiting_tool_call

pytestmark = pytest.mark.django_db


@pytest.fixture
def task_result(superuser):
    approval = waiting_tool_call(superuser, goal="Plan with a task")
    approval.subtask.__class__.objects.filter(pk=approval.subtask_id).update(task_id="task-1")
    return TaskResult.objects.create(task_id="task-1", task_name="execution.run_subtask", status="SUCCESS")


def test_execution_transition_event_and_task_result_pages_render(superuser, task_result):
    client = client_for(superuser)
    execution = ExecutionState.objects.get()
    pages = [
        reverse("admin:execution_executionstate_changelist"),
        reverse("admin:execution_executionstate_change", args=[execution.pk]),
        reverse("admin:execution_statetransition_changelist"),
        reverse("admin:execution_statetransition_change", args=[StateTransition.objects.first().pk]),
        reverse("admin:execution_event_changelist") + f"?plan__id__exact={execution.plan_id}",
        reverse("admin:execution_event_change", args=[Event.objects.first().pk]),
        reverse("admin:django_celery_results_taskresult_changelist") + "?task_id=task-1",
        reverse("admin:django_celery_results_taskresult_change", args=[task_result.pk]),
    ]
    for url in pages:
        assert client.get(url).status_code == 200, url
    state_page = client.get(pages[1]).content.decode()
    assert "execution started" in state_page
    assert 'data-status="waiting_approval"' in state_page
    result_page = client.get(pages[-1]).content.decode()
    assert reverse("admin:plans_subtask_change", args=[execution.plan.subtasks.get().pk]) in result_page


def test_execution_records_and_task_results_are_read_only(superuser, task_result):
    client = client_for(superuser)
    execution = ExecutionState.objects.get()
    assert client.get(reverse("admin:execution_executionstate_add")).status_code == 403
    assert client.post(reverse("admin:execution_executionstate_change", args=[execution.pk]), {}).status_code == 403
    assert (
        client.post(reverse("admin:django_celery_results_taskresult_delete", args=[task_result.pk])).status_code == 403
    )
    change = client.post(reverse("admin:django_celery_results_taskresult_change", args=[task_result.pk]), {})
    assert change.status_code == 403


def test_staff_see_the_events_of_their_own_plans_only(owner, bystander):
    waiting_tool_call(owner)
    events = reverse("admin:execution_event_changelist")
    assert client_for(owner).get(events).context["cl"].result_count == Event.objects.count() > 0
    assert client_for(bystander).get(events).context["cl"].result_count == 0


def test_the_admin_index_links_to_flower_and_the_queue(superuser, settings):
    settings.FLOWER_URL = "http://flower.example:5555/"
    html = client_for(superuser).get(reverse("admin:index")).content.decode()
    assert '<a href="http://flower.example:5555/" target="_blank" rel="noopener" id="flower-link">' in html
    assert reverse("admin:approvals_approval_changelist") + "?status__exact=pending" in html
