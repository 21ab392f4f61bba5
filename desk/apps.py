"""App config for the admin desk (its admin modules, templates, static files and tags)."""

from django.apps import AppConfig


class DeskConfig(AppConfig):
    name = "desk"
    verbose_name = "Admin desk"
