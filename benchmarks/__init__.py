"""Benchmarks: `make bench` measures the engine and raw Celery (a minimal app) side by side on the same broker.

Importing the package first sets Django up for a benchmark run (`python -m benchmarks`):
the Redis result backend, next to the broker, unless BENCH_RESULT_BACKEND names another.
Web and worker processes import it too (the raw tasks, the probe agent), already set up.
"""

import os

import django
from django.apps import apps

if not apps.ready:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    _broker = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    _base, _, _db = _broker.rpartition("/")
    os.environ["CELERY_RESULT_BACKEND"] = os.environ.get("BENCH_RESULT_BACKEND") or (
        f"{_base}/{int(_db) + 1}" if _db.isdigit() else _broker
    )
    # The API client of the benchmark makes requests in-process too (query counts).
    os.environ["API_THROTTLE_USER"] = "100000000/minute"
    os.environ["EXECUTION_PYTHON_AGENT_MODULES"] = "benchmarks.agents:*"
    django.setup()
