"""Admin for grants: the tool calls remembered by an approving vote, and revoking them (the API's DELETE)."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString

from approvals.grants import GrantNotFound, GrantRevokeRefused, grant_revoke
from approvals.models import Grant
from desk.access import StaffReadOnly
from desk.display import plan_link
from plans.selectors import is_approver, plans_visible_to


@admin.register(Grant)
class GrantAdmin(StaffReadOnly, admin.ModelAdmin):
    list_display = ["tool", "agent", "scope", "plan_goal", "session_id", "created_by", "created_at"]
    list_filter = ["scope"]
    list_select_related = ["plan", "created_by"]
    search_fields = ["tool", "agent", "plan__goal", "session_id"]
    fields = [("tool", "agent", "scope"), "plan_goal", "session_id", ("created_by", "created_at")]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Grant]:
        """The grants of the plans the user sees: their own, or all of them for deciders."""
        return Grant.objects.filter(plan__in=plans_visible_to(request.user)).select_related("plan", "created_by")

    def has_delete_permission(self, request: HttpRequest, obj: Grant | None = None) -> bool:
        """Revoking: the plan's owner or a decider (the queryset shows staff only their own plans' grants)."""
        if obj is None:
            return bool(request.user.is_active and request.user.is_staff)
        return bool(is_approver(request.user) or obj.owner_id == request.user.pk)

    @admin.display(description="plan", ordering="plan__goal")
    def plan_goal(self, grant: Grant) -> SafeString:
        return plan_link(grant.plan_id, grant.plan.goal)

    def delete_model(self, request: HttpRequest, obj: Grant) -> None:
        self._revoke(request, [obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Grant]) -> None:
        self._revoke(request, list(queryset))

    def _revoke(self, request: HttpRequest, grants: list[Grant]) -> None:
        """Revoke through the service (recorded in the plan's events), reporting what could not be."""
        for grant in grants:
            try:
                grant_revoke(grant_id=grant.pk, user=request.user)
            except (GrantNotFound, GrantRevokeRefused) as error:
                messages.error(request, f"Not revoked: {error}")
