"""Under uvicorn with debug off, the admin and the API docs load their static files whether or not collectstatic ran."""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests

from execution.services import plan_submit
from scripts.processes import ROOT, WebServer, current_database_url
from tests.desk.support import staff
from tests.support.factories import plan_data, subtask

HASHED = re.compile(r"\.[0-9a-f]{12}\.(css|js)$")


# Processes of its own (uvicorn, manage.py collectstatic): not in make test-fast.
pytestmark = pytest.mark.processes


class Assets(HTMLParser):
    """Collects the stylesheets and scripts a page links to."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "link" and attributes.get("rel") == "stylesheet" and attributes.get("href"):
            self.urls.append(attributes["href"] or "")
        elif tag == "script" and attributes.get("src"):
            self.urls.append(attributes["src"] or "")


def assets_of(html: str) -> list[str]:
    parser = Assets()
    parser.feed(html)
    return parser.urls


@pytest.fixture(params=["without collectstatic", "after collectstatic"])
def static_root(request, tmp_path) -> Path:
    root = tmp_path / "static"
    if request.param == "after collectstatic":
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
            cwd=ROOT,
            env={**os.environ, "DJANGO_STATIC_ROOT": str(root)},
            check=True,
            timeout=120,
        )
    return root


@pytest.fixture
def server(static_root, transactional_db, tmp_path) -> Iterator[WebServer]:
    env = {**os.environ, "DATABASE_URL": current_database_url(), "DJANGO_STATIC_ROOT": str(static_root)}
    env.pop("DJANGO_DEBUG", None)
    with WebServer.running(env, tmp_path) as web:
        yield web


def logged_in(server: WebServer, username: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{server.url}/admin/login/", timeout=10).raise_for_status()
    answer = session.post(
        f"{server.url}/admin/login/?next=/admin/",
        data={
            "username": username,
            "password": "pw-for-tests",
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        timeout=10,
    )
    assert answer.url == f"{server.url}/admin/", answer.text[-2000:]
    return session


def test_admin_pages_and_api_docs_load_every_stylesheet_and_script(server, static_root):
    root = staff("root", superuser=True)
    plan = plan_submit(owner=root, data=plan_data(subtask("build"), subtask("test", "build")))
    approval = plan.approvals.get()
    session = logged_in(server, root.username)
    pages = [
        "/admin/login/",
        "/admin/",
        "/admin/plans/plan/",
        f"/admin/plans/plan/{plan.pk}/change/",
        "/admin/plans/subtask/",
        "/admin/approvals/approval/",
        f"/admin/approvals/approval/{approval.pk}/change/",
        "/api/v1/docs/",
    ]
    collected = (static_root / "staticfiles.json").exists()

    for page in pages:
        answer = session.get(server.url + page, timeout=10)
        assert answer.status_code == 200, f"{page}: {answer.status_code}"
        assets = [url for url in assets_of(answer.text) if url.startswith("/static/")]
        assert any(url.endswith(".css") for url in assets), f"{page} links no stylesheet"
        for url in assets:
            asset = session.get(server.url + url, timeout=10)
            assert asset.status_code == 200, f"{page} links {url}: {asset.status_code}"
            # Hashed names only once collectstatic has written its manifest.
            assert bool(HASHED.search(url)) == collected, url
        stylesheet = next(url for url in assets if url.endswith(".css"))
        assert session.get(server.url + stylesheet, timeout=10).headers["Content-Type"].startswith("text/css")
