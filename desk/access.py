"""Who may see what in the admin: staff see it, nobody edits it by hand."""

from typing import Any

from django.contrib.admin.utils import flatten_fieldsets
from django.http import HttpRequest


class ReadOnly:
    """Nothing here is written by hand: states change through services, results through workers."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class StaffReadOnly(ReadOnly):
    """Any active staff user may look; what they see is narrowed by each admin's queryset.

    Every field a page shows is read-only, so the layout (`fields` or `fieldsets`) is the
    only list of them.
    """

    class Media:
        # The desk's styles (badges, progress bars, the DAG, history tables) on every page.
        css = {"all": ["desk/admin.css"]}

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fieldsets = getattr(self, "fieldsets", None) or [(None, {"fields": getattr(self, "fields", None) or ()})]
        return flatten_fieldsets(fieldsets)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_staff
