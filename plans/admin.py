"""Admin for plans and subtasks."""

from django.contrib import admin

from plans.models import Plan, Subtask, SubtaskDependency


class SubtaskInline(admin.TabularInline):
    model = Subtask
    fields = ["key", "agent", "status", "attempts", "batch_index", "error"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["goal", "status", "owner", "session_id", "created_at"]
    list_filter = ["status", "failure_policy"]
    search_fields = ["goal", "session_id"]
    readonly_fields = [
        "id",
        "status",
        "last_event_seq",
        "created_at",
        "updated_at",
        "approved_at",
        "started_at",
        "completed_at",
    ]
    inlines = [SubtaskInline]


@admin.register(Subtask)
class SubtaskAdmin(admin.ModelAdmin):
    list_display = ["key", "plan", "agent", "status", "attempts", "batch_index"]
    list_filter = ["status", "agent"]
    search_fields = ["key", "plan__goal"]
    list_select_related = ["plan"]
    raw_id_fields = ["plan"]


@admin.register(SubtaskDependency)
class SubtaskDependencyAdmin(admin.ModelAdmin):
    list_display = ["subtask", "depends_on"]
    raw_id_fields = ["subtask", "depends_on"]
