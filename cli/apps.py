"""App config for the command line (it holds the `plans` management command)."""

from django.apps import AppConfig


class CliConfig(AppConfig):
    name = "cli"
    verbose_name = "Command line"
