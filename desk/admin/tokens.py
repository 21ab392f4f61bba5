"""Admin for API tokens: who has one and since when, never the key (tokens do not expire: a key seen is a key kept)."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from desk.models import ApiToken

admin.site.unregister(TokenProxy)


@admin.register(ApiToken)
class KeylessTokenAdmin(TokenAdmin):
    """Tokens by user: revoke one by deleting it (its owner gets a new one from auth/token/)."""

    list_display = ("user", "created")
    fields = ("user", "created")
    readonly_fields = ("user", "created")

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A token made here would have to show its key: tokens come from POST /api/v1/auth/token/.
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
