"""scripts/web.sh, the web process as make run, the Docker image and Compose start it: several uvicorn processes."""

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request

import psutil
import pytest

from scripts.processes import ROOT, current_database_url
from scripts.servers import free_port

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

TOKEN = "metrics-token-for-this-test"
GETS = re.compile(r'^django_http_requests_total_by_method_total\{method="GET"\} ([0-9.e+]+)$', re.M)


def get(url: str, **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def servers(process: subprocess.Popen) -> list[psutil.Process]:
    """uvicorn's server processes under its parent (not multiprocessing's resource tracker)."""
    return [child for child in psutil.Process(process.pid).children() if "spawn_main" in " ".join(child.cmdline())]


@pytest.fixture
def two_processes(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": current_database_url(),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
        "METRICS_TOKEN": TOKEN,
        "WEB_CONCURRENCY": "2",
        "TMPDIR": str(tmp_path),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "web.log").open("wb")
    process = subprocess.Popen(
        ["scripts/web.sh", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if get(f"{url}/health/live/")[0] == 200 and len(servers(process)) == 2:
                break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail((tmp_path / "web.log").read_text(errors="replace")[-3000:])
        time.sleep(0.2)
    yield url, process
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    log.close()


def test_the_web_runs_one_process_per_worker_and_its_metrics_count_the_requests_of_all(two_processes):
    url, process = two_processes
    children = servers(process)
    assert len(children) == 2
    for _ in range(40):
        assert get(f"{url}/api/v1/plans/")[0] == 401
    # Whichever process answers the scrape, it counts the requests both served.
    for _ in range(6):
        status, text = get(f"{url}/metrics", Authorization=f"Bearer {TOKEN}")
        assert status == 200
        assert float(GETS.search(text).group(1)) >= 40, text[:2000]
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)
