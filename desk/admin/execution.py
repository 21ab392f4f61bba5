"""Admin for execution states, their transitions, the event log and Celery's task results (all read-only)."""

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html_join
from django.utils.safestring import SafeString
from django_celery_results.admin import TaskResultAdmin
from django_celery_results.models import TaskResult

from desk.access import ReadOnly, StaffReadOnly
from desk.display import badge, plan_link, pretty_json
from execution.models import Event, ExecutionState, StateTransition
from plans.models import Subtask
from plans.selectors import plans_visible_to


class PlanScoped(StaffReadOnly):
    """Staff see the records of the plans they may see (plans.selectors), as in the plan pages."""

    plan_path = "plan"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)  # type: ignore[misc]
        return queryset.filter(**{f"{self.plan_path}__in": plans_visible_to(request.user)})


class StateTransitionInline(PlanScoped, admin.TabularInline):
    model = StateTransition
    plan_path = "execution__plan"
    fields = ("created_at", "from_badge", "to_badge", "reason", "actor", "metadata")
    extra = 0
    can_delete = False

    @admin.display(description="from")
    def from_badge(self, transition: StateTransition) -> SafeString:
        return badge(transition.from_state)

    @admin.display(description="to")
    def to_badge(self, transition: StateTransition) -> SafeString:
        return badge(transition.to_state)


@admin.register(ExecutionState)
class ExecutionStateAdmin(PlanScoped, admin.ModelAdmin):
    list_display = ["plan_goal", "state_badge", "created_at", "updated_at"]
    list_filter = ["state"]
    search_fields = ["plan__goal", "plan__session_id"]
    list_select_related = ["plan"]
    fields = ("plan_goal", "state_badge", "created_at", "updated_at")
    inlines = [StateTransitionInline]

    @admin.display(description="plan", ordering="plan__goal")
    def plan_goal(self, execution: ExecutionState) -> SafeString:
        return plan_link(execution.plan_id, execution.plan.goal)

    @admin.display(description="state", ordering="state")
    def state_badge(self, execution: ExecutionState) -> SafeString:
        return badge(execution.state)


@admin.register(StateTransition)
class StateTransitionAdmin(PlanScoped, admin.ModelAdmin):
    plan_path = "execution__plan"
    list_display = ["created_at", "plan_goal", "from_badge", "to_badge", "reason", "actor"]
    list_filter = ["to_state", "actor"]
    search_fields = ["execution__plan__goal", "reason", "actor"]
    list_select_related = ["execution__plan"]

    @admin.display(description="plan")
    def plan_goal(self, transition: StateTransition) -> SafeString:
        return plan_link(transition.execution.plan_id, transition.execution.plan.goal)

    @admin.display(description="from", ordering="from_state")
    def from_badge(self, transition: StateTransition) -> SafeString:
        return badge(transition.from_state)

    @admin.display(description="to", ordering="to_state")
    def to_badge(self, transition: StateTransition) -> SafeString:
        return badge(transition.to_state)


@admin.register(Event)
class EventAdmin(PlanScoped, admin.ModelAdmin):
    list_display = ["seq", "type", "plan_goal", "payload_json", "created_at"]
    list_filter = ["type"]
    search_fields = ["plan__goal", "type"]
    list_select_related = ["plan"]
    ordering = ["-created_at", "-seq"]
    fields = ("plan_goal", "seq", "type", "payload_json", "created_at")

    @admin.display(description="plan")
    def plan_goal(self, event: Event) -> SafeString:
        return plan_link(event.plan_id, event.plan.goal)

    @admin.display(description="payload")
    def payload_json(self, event: Event) -> SafeString:
        return pretty_json(event.payload, limit=600)


admin.site.unregister(TaskResult)


@admin.register(TaskResult)
class ReadOnlyTaskResultAdmin(ReadOnly, TaskResultAdmin):
    """Celery's task results, linked from subtasks (Subtask.task_id) and back.

    Superusers see every result; other staff (with the view permission) only those of the
    subtasks of plans they may see, as everywhere else in the desk.
    """

    fieldsets = [(None, {"fields": ["subtasks"]}), *TaskResultAdmin.fieldsets]  # type: ignore[assignment]

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskResult]:
        results = super().get_queryset(request)
        if request.user.is_superuser:
            return results
        return results.filter(task_id__in=self._visible_subtasks(request).exclude(task_id="").values("task_id"))

    def _visible_subtasks(self, request: HttpRequest) -> QuerySet[Subtask]:
        return Subtask.objects.filter(plan__in=plans_visible_to(request.user))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*super().get_readonly_fields(request, obj), "subtasks"]

    @admin.display(description="subtask")
    def subtasks(self, result: TaskResult) -> SafeString | str:
        # The subtask whose current dispatch this is; an earlier attempt's task is no longer linked.
        # Task ids are unique: a result a user may see (get_queryset) is that of a subtask they may see.
        found = Subtask.objects.filter(task_id=result.task_id).select_related("plan")
        return (
            format_html_join(
                ", ",
                '<a href="{}">{}</a> of {}',
                (
                    (
                        reverse("admin:plans_subtask_change", args=[subtask.pk]),
                        subtask.key,
                        plan_link(subtask.plan_id, subtask.plan.goal),
                    )
                    for subtask in found
                ),
            )
            or "—"
        )
