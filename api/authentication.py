"""How API clients authenticate: DRF's token authentication, its read compiled once."""

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from common.compiled import CompiledGet

# The token with its user, as DRF reads it (select_related("user")), compiled once (common/compiled.py).
TOKEN_WITH_USER = CompiledGet(Token.objects.select_related("user"))


class TokenAuthentication(authentication.TokenAuthentication):
    """`Authorization: Token <key>`, as DRF's TokenAuthentication, without compiling its query on every request.

    Every API request authenticates first: the ORM compiling DRF's read of the token took
    longer than PostgreSQL took to run it. The answers are DRF's: the same errors, the same
    user and token.
    """

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        try:
            token = TOKEN_WITH_USER.get(key)
        except Token.DoesNotExist:
            raise exceptions.AuthenticationFailed(_("Invalid token.")) from None
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return token.user, token
