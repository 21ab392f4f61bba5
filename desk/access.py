"""Who may see what in the admin: staff see it, nobody edits it by hand; who may try to log in, and how often."""

from typing import Any

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.contrib.admin.utils import flatten_fieldsets
from django.http import HttpRequest, HttpResponse
from rest_framework.throttling import BaseThrottle


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


def client_address(request: HttpRequest) -> str:
    """Return the client's address as the API's throttles count it (DJANGO_NUM_PROXIES decides about proxies)."""
    return BaseThrottle().get_ident(request)  # type: ignore[arg-type]  # reads only request.META


class LoginLimits(AxesStandaloneBackend):
    """Refuse an admin login from an address locked out by its failed logins (django-axes).

    A login without a request (a management command, a test) comes from no client address
    and is left to the next backend.
    """

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> None:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


def login_locked_out(request: HttpRequest, original_response: Any = None, credentials: Any = None) -> HttpResponse:
    """Answer a login attempt from a locked-out address: 429 with Retry-After, as the API's throttles do."""
    seconds = int(settings.AXES_COOLOFF_TIME.total_seconds())
    response = HttpResponse(
        f"Too many failed logins from your address: try again in {max(1, round(seconds / 60))} minute(s).\n",
        status=429,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(seconds)
    return response
