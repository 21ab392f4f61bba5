"""The desk's one model of its own: API tokens as the admin shows them, named by their user, never by their key."""

from rest_framework.authtoken.models import TokenProxy


class ApiToken(TokenProxy):
    """An API token, shown by its user: the key (its str() in DRF) would end up in titles, breadcrumbs and logs."""

    class Meta:
        proxy = True
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"API token of {self.user}"
