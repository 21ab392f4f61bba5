"""make lint's dependency audit: a known-vulnerable pin fails it; an unreachable advisory database only skips it."""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from scripts.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def pinned(name: str) -> str:
    line = next(line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith(f"{name}=="))
    return line.split("==", 1)[1]


@pytest.fixture
def advisories():
    """A local OSV-compatible database that knows one advisory: against the pinned Django."""
    vulnerable = {"name": "django", "version": pinned("django")}
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            asked.append(query["package"]["name"])
            found = {}
            if query["package"]["name"] == vulnerable["name"] and query["version"] == vulnerable["version"]:
                found = {
                    "vulns": [
                        {
                            "id": "GHSA-test-0000-0000",
                            "summary": "A test advisory",
                            "affected": [
                                {
                                    "package": {"name": "django", "ecosystem": "PyPI"},
                                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "99"}]}],
                                }
                            ],
                        }
                    ]
                }
            body = json.dumps(found).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1/query", asked
    server.shutdown()


def audit(osv_url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/audit.py"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT), "PIP_AUDIT_OSV_URL": osv_url},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_known_vulnerable_pin_fails_the_audit(advisories):
    url, asked = advisories
    run = audit(url)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "GHSA-test-0000-0000" in run.stdout + run.stderr
    # Every pin was looked up, the development tools' too.
    assert {"django", "celery", "pytest", "bandit"} <= set(asked)


def test_an_unreachable_advisory_database_skips_the_audit_saying_so():
    run = audit(f"http://127.0.0.1:{free_port()}/v1/query")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "skipped" in run.stdout
