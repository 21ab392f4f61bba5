"""ASGI entry point: serves the admin, the API and the live event stream; anonymous health probes first."""

import os

import django

from config import telemetry

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Before the application is built: the Django instrumentation adds its middleware.
telemetry.configure("web")

django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application does

# Imported once Django is set up (it reads the settings and the models' apps).
from django.conf import settings  # noqa: E402

from api.probes import Probes  # noqa: E402
from config.admission import Admission  # noqa: E402
from config.database import connections_pooled  # noqa: E402
from config.handler import SynchronousChainHandler  # noqa: E402

# As many threads as requests are let in at once (with no bound, as many as Python's executors take at most).
_admitted = settings.WEB_MAX_CONCURRENT_REQUESTS
django_application = SynchronousChainHandler(threads=_admitted if _admitted > 0 else 32)
connections_pooled(settings.WEB_DATABASE_POOL_SIZE, max_idle_s=settings.WEB_DATABASE_POOL_MAX_IDLE_S)

# Probes are answered on the event loop, outside the bound on requests worked on at once.
application = Probes(Admission(django_application, limit=settings.WEB_MAX_CONCURRENT_REQUESTS))
