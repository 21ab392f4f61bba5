"""Configuration: database URLs in every libpq form, and production settings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.database import database_from_url

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
