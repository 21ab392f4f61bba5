"""Template tags for the admin's links to the worker monitor (Flower)."""

from django import template
from django.conf import settings

register = template.Library()


@register.simple_tag
def flower_url() -> str:
    """Return the configured Flower URL (settings.FLOWER_URL), or an empty string."""
    return getattr(settings, "FLOWER_URL", "")
