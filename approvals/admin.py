"""Admin for approvals."""

from django.contrib import admin

from approvals.models import Approval


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin):
    list_display = ["kind", "tool", "plan", "status", "requested_at", "expires_at", "decided_by"]
    list_filter = ["status", "kind"]
    list_select_related = ["plan", "decided_by"]
    raw_id_fields = ["plan", "subtask", "decided_by"]
