"""Configuration: database URLs in every libpq form, and production settings."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from celery.app.backends import by_url
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler

from config.celery import app as celery_app
from config.database import database_from_url
from config.redis_results import RedisBackend
from config.redis_transport import Channel as KeptClientChannel
from config.redis_transport import broker_transport
from config.results import is_database_backend, result_backend_default

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgres://u:p@db.example:6543/plans?sslmode=require",
            {
                "NAME": "plans",
                "USER": "u",
                "PASSWORD": "p",
                "HOST": "db.example",
                "PORT": "6543",
                "OPTIONS": {"sslmode": "require"},
            },
        ),
        (
            "postgresql://postgres:@/postgres?host=/tmp/sock",
            {"NAME": "postgres", "USER": "postgres", "PASSWORD": "", "HOST": "/tmp/sock", "PORT": "", "OPTIONS": {}},
        ),
        (
            "postgresql://%2Fvar%2Frun%2Fpostgresql/test",
            {"NAME": "test", "USER": "", "PASSWORD": "", "HOST": "/var/run/postgresql", "PORT": "", "OPTIONS": {}},
        ),
        (
            "host=/var/run/postgresql dbname=test user=root application_name=svc",
            {
                "NAME": "test",
                "USER": "root",
                "PASSWORD": "",
                "HOST": "/var/run/postgresql",
                "PORT": "",
                "OPTIONS": {"application_name": "svc"},
            },
        ),
        ("postgresql://alice@localhost", {"NAME": "alice", "USER": "alice", "HOST": "localhost"}),
    ],
)
def test_database_url_forms(url, expected):
    entry = database_from_url(url)
    assert entry["ENGINE"] == "django.db.backends.postgresql"
    assert {key: entry[key] for key in expected} == expected


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.processes
def test_deploy_check_passes_with_production_settings():
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_SECRET_KEY="k" * 20 + "-production-secret-from-the-environment-0123456789",
        DJANGO_HTTPS="true",
        DJANGO_ALLOWED_HOSTS="plans.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.processes
def test_debug_is_off_unless_asked_and_a_secret_is_required():
    result = run_manage("check")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


@pytest.mark.parametrize(
    ("broker", "backend"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/1"),
        ("redis://:secret@cache.internal:6380", "redis://:secret@cache.internal:6380/1"),
        (
            "rediss://u:p@cache.example:6379/4?ssl_cert_reqs=required",
            "rediss://u:p@cache.example:6379/5?ssl_cert_reqs=required",
        ),
        ("redis://127.0.0.1:6379/15", "redis://127.0.0.1:6379/15"),
        ("amqp://guest@127.0.0.1:5672//", "django-db"),
    ],
)
def test_results_go_to_the_brokers_redis_by_default_else_to_postgresql(broker, backend):
    assert result_backend_default(broker) == backend
    assert is_database_backend(backend) == (backend == "django-db")


@pytest.mark.processes
def test_a_process_started_with_only_the_urls_uses_redis_results_and_django_db_when_asked():
    show = (
        "from django.conf import settings as s; "
        "print(s.CELERY_RESULT_BACKEND, s.CELERY_RESULT_EXTENDED, s.CELERY_RESULT_EXPIRES)"
    )
    command = ["shell", "--verbosity", "0", "-c", show]
    urls = {"DJANGO_SECRET_KEY": "k" * 50, "CELERY_BROKER_URL": "redis://127.0.0.1:6390/2"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    default = subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        env={**clean, **urls},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert default.stdout.split() == ["redis://127.0.0.1:6390/3", "False", "86400"], default.stderr
    asked = subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        env={**clean, **urls, "CELERY_RESULT_BACKEND": "django-db"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert asked.stdout.split() == ["django-db", "True", "604800"], asked.stderr


def test_sending_a_task_outside_a_worker_subscribes_to_no_result_channel():
    # Nothing listens on this port: Celery's own Redis backend would try to subscribe there.
    backend_class, url = by_url("redis://127.0.0.1:9/1", loader=celery_app.loader)
    assert backend_class is RedisBackend
    backend = backend_class(app=celery_app, url=url)
    backend.on_task_call(producer=None, task_id="a-task")
    assert backend.result_consumer.subscribed_to == set()


@pytest.mark.parametrize(
    ("broker", "transport"),
    [
        ("redis://127.0.0.1:6379/0", "config.redis_transport:Transport"),
        ("rediss://u:p@cache.example:6379/4?ssl_cert_reqs=required", "config.redis_transport:Transport"),
        ("amqp://guest@127.0.0.1:5672//", None),
        ("sentinel://127.0.0.1:26379", None),
    ],
)
def test_a_redis_broker_gets_the_transport_keeping_one_client_per_pool_and_others_kombus(broker, transport):
    assert broker_transport(broker) == transport


def test_a_redis_channel_keeps_one_client_per_connection_pool():
    # kombu built a client (a tenth of a millisecond) for every publish batch, receipt and ack.
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, KeptClientChannel)
        client = channel._create_client()
        assert channel._create_client() is client
        assert client.connection_pool is channel.pool
        channel._disconnect_pools()  # as after a fork: a new pool, and a client of its own
        assert channel._create_client() is not client
        assert channel._create_client().connection_pool is channel.pool
        assert channel._create_client(asynchronous=True) is not channel._create_client()


def test_every_thread_of_a_process_shares_one_result_backend():
    backends: list[object] = []
    thread = threading.Thread(target=lambda: backends.append(celery_app.backend))
    thread.start()
    thread.join()
    assert backends == [celery_app.backend]


def test_under_asgi_every_middleware_runs_in_the_requests_thread(monkeypatch):
    # Django runs a middleware in async mode when the one inside it is async-capable; Django's
    # own (MiddlewareMixin) then switch to a thread and back for each hook. The innermost being
    # synchronous only, all of them run synchronously: one switch into the stack for a request.
    modes: dict[str, bool] = {}
    adapt = BaseHandler.adapt_method_mode

    def spied(self, is_async, method, method_is_async=None, debug=False, name=None):
        if name is not None and name.startswith("middleware "):
            modes[name.removeprefix("middleware ")] = is_async
        return adapt(self, is_async, method, method_is_async, debug, name)

    monkeypatch.setattr(BaseHandler, "adapt_method_mode", spied)
    ASGIHandler()
    assert set(modes) == set(settings.MIDDLEWARE)
    assert not [name for name, is_async in modes.items() if is_async]
