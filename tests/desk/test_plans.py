"""The plans admin: list and page, the DAG picture, and operator actions that call the execution services."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from approvals.models import ApprovalStatus
from desk import dag
from desk.admin import plans as plan_admin
from execution.models import ExecState
from execution.services import plan_submit
from plans.models import Plan, PlanStatus, SubtaskStatus
from tests.desk.support import client_for, failed_plan, running_plan, waiting_tool_call
from tests.support.factories import plan_data, plan_recount, subtask

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:plans_plan_changelist")


def change_url(plan: Plan) -> str:
    return reverse("admin:plans_plan_change", args=[plan.pk])


def operate(client, plan: Plan, name: str, **data: str):
    return client.post(reverse("admin:plans_plan_operate", args=[plan.pk, name]), data, follow=True)


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_list_shows_status_execution_progress_and_counts(superuser):
    waiting = waiting_tool_call(superuser, goal="Write the login screen")
    failed_plan(superuser, subtask("x"), subtask("y", "x"))
    response = client_for(superuser).get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Write the login screen" in html
    assert 'data-status="waiting_approval"' in html
    assert 'data-status="failed"' in html
    assert 'class="progress"' in html
    assert "2 total: 2 failed" in html
    pending = (
        reverse("admin:approvals_approval_changelist") + f"?plan__id__exact={waiting.plan_id}&amp;status__exact=pending"
    )
    assert f'<a href="{pending}">1 pending</a>' in html


def test_the_list_needs_the_same_few_queries_for_many_plans(superuser, django_assert_max_num_queries):
    client = client_for(superuser)
    running_plan(superuser, subtask("a"), subtask("b", "a"))
    with django_assert_max_num_queries(8) as few:
        assert client.get(CHANGELIST).status_code == 200
    for index in range(12):
        waiting_tool_call(superuser, goal=f"plan {index}") if index % 2 else failed_plan(superuser, subtask("a"))
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get(CHANGELIST)
    assert response.context["cl"].result_count == 13


def test_filters_and_search_find_plans_by_status_state_goal_session_and_id(superuser):
    waiting = waiting_tool_call(superuser, goal="Ship the Flutter app")
    failed = failed_plan(superuser, subtask("a"))
    Plan.objects.filter(pk=failed.pk).update(session_id="session-42")
    client = client_for(superuser)

    def found(query: str) -> set:
        return {plan.pk for plan in client.get(CHANGELIST + query).context["cl"].result_list}

    assert found("?status__exact=failed") == {failed.pk}
    assert found("?execution__state__exact=waiting_approval") == {waiting.plan_id}
    assert found("?waiting=yes") == {waiting.plan_id}
    assert found("?q=flutter") == {waiting.plan_id}
    assert found("?q=session-42") == {failed.pk}
    assert found(f"?q={failed.pk}") == {failed.pk}


def test_the_page_shows_subtasks_the_picture_the_history_and_the_events(superuser):
    plan = failed_plan(superuser, subtask("build", agent="script"), subtask("test", "build", agent="script"))
    plan.subtasks.filter(key="build").update(status=SubtaskStatus.DONE, result={"files": ["main.dart"]}, error="")
    plan_recount(plan_id=plan.pk)
    response = client_for(superuser).get(change_url(plan))
    assert response.status_code == 200
    html = response.content.decode()
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="plan-dag"' in html
    assert 'data-key="build" data-status="done"' in html
    assert 'data-key="test" data-status="failed"' in html
    assert "main.dart" in html
    assert "Scripted failure" in html
    assert "execution started" in html  # the transition history
    assert "plan.created" in html
    assert "plan.started" in html
    assert [op.name for op in response.context["operations"]] == ["retry"]


def test_a_large_plan_gets_a_summary_instead_of_the_picture_and_the_inline(superuser, monkeypatch):
    monkeypatch.setattr(dag, "MAX_NODES", 3)
    monkeypatch.setattr(plan_admin, "INLINE_SUBTASKS", 3)
    plan = running_plan(superuser, *(subtask(f"s{i}") for i in range(5)))
    response = client_for(superuser).get(change_url(plan))
    html = response.content.decode()
    assert "plan-dag-summary" in html
    assert "5 subtasks in 2 batches" in html
    assert 'id="subtasks-group"' not in html
    assert f"?plan__id__exact={plan.pk}" in html


def test_approve_action_approves_draft_plans_through_the_service(superuser):
    draft = plan_submit(owner=superuser, data=plan_data(subtask("a")))
    response = client_for(superuser).post(
        CHANGELIST, {"action": "approve_selected", "_selected_action": [draft.pk]}, follow=True
    )
    draft.refresh_from_db()
    assert draft.status == PlanStatus.IN_PROGRESS
    assert draft.approvals.get().status == ApprovalStatus.APPROVED
    assert any(message.startswith("Approved") for message in messages_of(response))


def test_an_action_that_does_not_apply_is_an_error_message_not_a_traceback(superuser):
    plan = running_plan(superuser)
    response = operate(client_for(superuser), plan, "execute")
    assert response.status_code == 200
    assert messages_of(response) == ["“Test goal”: Only an approved plan can be executed; this one is in_progress."]


def test_cancel_button_cancels_the_plan_with_the_reason(superuser):
    approval = waiting_tool_call(superuser)
    response = operate(client_for(superuser), approval.plan, "cancel", reason="wrong repository")
    plan = Plan.objects.select_related("execution").get(pk=approval.plan_id)
    assert (plan.status, plan.execution.state) == (PlanStatus.CANCELLED, ExecState.CANCELLED)
    assert plan.execution.transitions.last().reason == "wrong repository"
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.CANCELLED
    assert messages_of(response) == ["Cancelled: “Edit”."]


def test_pause_and_resume_buttons_call_the_services(superuser):
    plan = running_plan(superuser)
    client = client_for(superuser)
    operate(client, plan, "pause")
    assert Plan.objects.get(pk=plan.pk).execution.state == ExecState.PAUSED
    operate(client, plan, "resume")
    assert Plan.objects.get(pk=plan.pk).execution.state == ExecState.RUNNING


def test_retry_retries_one_failed_subtask_or_all_of_them(superuser):
    plan = failed_plan(superuser, subtask("a"), subtask("b"), subtask("c"))
    client = client_for(superuser)
    response = operate(client, plan, "retry", key="a")
    assert dict(plan.subtasks.values_list("key", "status")) == {"a": "queued", "b": "failed", "c": "failed"}
    assert messages_of(response) == ["Retried: “Test goal” (subtask 'a')."]
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.IN_PROGRESS

    client.post(CHANGELIST, {"action": "retry_selected", "_selected_action": [plan.pk]})
    assert set(plan.subtasks.values_list("status", flat=True)) == {"queued"}

    response = operate(client, plan, "retry", key="no-such-key")
    assert messages_of(response)[-1] == "“Test goal”: there is no subtask 'no-such-key'."


def test_staff_see_only_their_own_plans_and_operate_only_on_them(owner, bystander, approver):
    plan = running_plan(owner)
    assert client_for(bystander).get(change_url(plan)).status_code == 302
    assert client_for(bystander).get(CHANGELIST).context["cl"].result_count == 0
    operate(client_for(bystander), plan, "cancel")
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.IN_PROGRESS

    owner_page = client_for(owner).get(change_url(plan))
    assert [op.name for op in owner_page.context["operations"]] == ["pause", "cancel"]

    # Approvers see every plan and may approve it, but only owners (and superusers) run it.
    approver_page = client_for(approver).get(change_url(plan))
    assert approver_page.status_code == 200
    assert approver_page.context["operations"] == []
    response = operate(client_for(approver), plan, "cancel")
    assert messages_of(response) == ["“Test goal”: you may not cancel this plan."]
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.IN_PROGRESS


def test_plans_cannot_be_added_or_edited_in_the_admin(superuser):
    plan = running_plan(superuser)
    client = client_for(superuser)
    assert client.get(reverse("admin:plans_plan_add")).status_code == 403
    assert client.post(change_url(plan), {"goal": "changed"}).status_code == 403
    assert client.get(reverse("admin:plans_plan_operate", args=[plan.pk, "cancel"])).status_code == 405


def test_subtask_pages_show_the_tool_call_transcript_and_link_the_task_result(superuser, settings):
    settings.CELERY_RESULT_BACKEND = "django-db"
    approval = waiting_tool_call(superuser, arguments={"path": "lib/login.dart"})
    edit = approval.subtask
    edit.task_id = "abc-123"
    edit.save(update_fields=["task_id"])
    client = client_for(superuser)
    html = client.get(reverse("admin:plans_subtask_change", args=[edit.pk])).content.decode()
    assert "lib/login.dart" in html
    assert "write_file" in html
    assert reverse("admin:approvals_approval_change", args=[approval.pk]) in html
    assert reverse("admin:django_celery_results_taskresult_changelist") + "?task_id=abc-123" in html
    listing = client.get(reverse("admin:plans_subtask_changelist") + f"?plan__id__exact={edit.plan_id}")
    assert [subtask.key for subtask in listing.context["cl"].result_list] == ["edit"]


def test_task_result_links_are_shown_only_to_users_who_may_open_task_results(owner, settings):
    settings.CELERY_RESULT_BACKEND = "django-db"
    approval = waiting_tool_call(owner)
    approval.subtask.__class__.objects.filter(pk=approval.subtask_id).update(task_id="abc-123")
    link = "?task_id=abc-123"
    pages = [
        reverse("admin:plans_plan_change", args=[approval.plan_id]),
        reverse("admin:plans_subtask_change", args=[approval.subtask_id]),
        reverse("admin:plans_subtask_changelist"),
    ]
    assert all(link not in client_for(owner).get(page).content.decode() for page in pages)
    owner.user_permissions.add(Permission.objects.get(codename="view_taskresult"))
    assert all(link in client_for(owner).get(page).content.decode() for page in pages)


def test_a_subtask_page_shows_the_model_conversation_and_the_token_usage(superuser):
    plan = running_plan(superuser, subtask("ask"))
    ask = plan.subtasks.get()
    ask.conversation = [
        {"role": "user", "content": "Which file?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "<b>main.dart</b>"},
    ]
    ask.usage = {"prompt_tokens": 30, "completion_tokens": 9, "steps": [{}, {}]}
    ask.save(update_fields=["conversation", "usage"])
    html = client_for(superuser).get(reverse("admin:plans_subtask_change", args=[ask.pk])).content.decode()
    assert "Which file?" in html
    assert "read_file" in html
    assert "[call_1] &lt;b&gt;main.dart&lt;/b&gt;" in html
    assert "30 prompt + 9 completion tokens over 2 model calls" in html


def test_with_results_in_redis_a_subtask_shows_its_task_id_without_a_link(superuser, settings):
    settings.CELERY_RESULT_BACKEND = "redis://127.0.0.1:6379/1"
    approval = waiting_tool_call(superuser)
    approval.subtask.__class__.objects.filter(pk=approval.subtask_id).update(task_id="abc-123")
    html = client_for(superuser).get(reverse("admin:plans_subtask_change", args=[approval.subtask_id])).content.decode()
    assert "abc-123" in html
    assert "?task_id=abc-123" not in html
