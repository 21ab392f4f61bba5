"""ASGI entry point: serves the admin, the API and the live event stream; anonymous health probes first."""

import os

from django.core.asgi import get_asgi_application

from config import telemetry

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Before the application is built: the Django instrumentation adds its middleware.
telemetry.configure("web")

django_application = get_asgi_application()

# Imported once Django is set up (it reads the settings and the models' apps).
from django.conf import settings  # noqa: E402

from api.probes import Probes  # noqa: E402
from config.admission import Admission  # noqa: E402
from config.database import connections_pooled  # noqa: E402

connections_pooled(settings.WEB_DATABASE_POOL_SIZE, max_idle_s=settings.WEB_DATABASE_POOL_MAX_IDLE_S)

# Probes are answered on the event loop, outside the bound on requests worked on at once.
application = Probes(Admission(django_application, limit=settings.WEB_MAX_CONCURRENT_REQUESTS))
