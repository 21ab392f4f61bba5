"""ASGI entry point: serves the admin, the API and the live event stream."""

import os

from django.core.asgi import get_asgi_application

from config import telemetry

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Before the application is built: the Django instrumentation adds its middleware.
telemetry.configure("web")

application = get_asgi_application()
