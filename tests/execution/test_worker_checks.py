"""Start-up checks: unsafe time limits stop a worker; an evicting Redis is reported."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from execution.engine.runs import retry_delay
from execution.worker import configuration_problems, eviction_warning

ROOT = Path(__file__).resolve().parents[2]


def test_hard_time_limit_must_stay_below_the_visibility_timeout(settings):
    settings.CELERY_VISIBILITY_TIMEOUT_S = 600
    settings.EXECUTION_MAX_TIMEOUT_S = 590
    settings.EXECUTION_HARD_LIMIT_GRACE_S = 30
    [problem] = configuration_problems()
    assert "visibility timeout" in problem
    settings.EXECUTION_MAX_TIMEOUT_S = 500
    assert configuration_problems() == []


@pytest.mark.processes
def test_a_worker_refuses_to_start_with_unsafe_limits():
    env = {**os.environ, "CELERY_VISIBILITY_TIMEOUT_S": "60", "EXECUTION_MAX_TIMEOUT_S": "120"}
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "--queues", "nothing"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Refusing to start the worker" in result.stderr + result.stdout


def test_an_evicting_redis_is_reported(settings):
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    before = client.config_get("maxmemory-policy")["maxmemory-policy"]
    try:
        client.config_set("maxmemory-policy", "allkeys-lru")
        assert "allkeys-lru" in eviction_warning(settings.CELERY_BROKER_URL)
        client.config_set("maxmemory-policy", "noeviction")
        assert eviction_warning(settings.CELERY_BROKER_URL) is None
    finally:
        client.config_set("maxmemory-policy", before)


def test_retry_delays_grow_exponentially_up_to_the_cap(settings):
    settings.EXECUTION_RETRY_BACKOFF_BASE_S = 2
    settings.EXECUTION_RETRY_BACKOFF_CAP_S = 20
    assert [retry_delay(n) for n in range(6)] == [2, 4, 8, 16, 20, 20]
    settings.CELERY_VISIBILITY_TIMEOUT_S = 10
    assert retry_delay(5) == 5
