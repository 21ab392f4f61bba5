"""The Celery application, configured from Django settings (CELERY_* names)."""

import os

from celery import Celery

# Connects the start-up checks of every worker (see execution/worker.py).
import execution.worker  # noqa: F401

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
