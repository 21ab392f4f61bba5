"""Admin for execution states, their transitions and the event log (read-only)."""

from django.contrib import admin

from execution.models import Event, ExecutionState, StateTransition


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class StateTransitionInline(admin.TabularInline):
    model = StateTransition
    fields = ["created_at", "from_state", "to_state", "reason", "actor"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(ExecutionState)
class ExecutionStateAdmin(ReadOnlyAdmin):
    list_display = ["plan", "state", "updated_at"]
    list_filter = ["state"]
    list_select_related = ["plan"]
    inlines = [StateTransitionInline]


@admin.register(StateTransition)
class StateTransitionAdmin(ReadOnlyAdmin):
    list_display = ["execution", "from_state", "to_state", "reason", "actor", "created_at"]
    list_filter = ["to_state"]


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["plan", "seq", "type", "created_at"]
    list_filter = ["type"]
    list_select_related = ["plan"]
