"""A Python client generated from the served OpenAPI schema imports, and drives a plan from submission to its end."""

import importlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support.factories import UserFactory

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("engine")]

PACKAGE = "plans_api_client"
PASSWORD = "client-secret-42"


@pytest.fixture
def generated(web, tmp_path):
    """The client openapi-python-client writes from the schema the web process serves, imported."""
    schema = tmp_path / "schema.json"
    schema.write_bytes(requests.get(f"{web.url}/api/v1/schema/?format=json", timeout=10).content)
    (tmp_path / "config.yml").write_text(f"package_name_override: {PACKAGE}\nproject_name_override: {PACKAGE}\n")
    subprocess.run(
        [
            Path(sys.executable).with_name("openapi-python-client"),
            "generate",
            "--path",
            str(schema),
            "--config",
            str(tmp_path / "config.yml"),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / PACKAGE),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.startswith(PACKAGE)]:
            del sys.modules[name]


def wait(until, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (value := until()):
        assert time.monotonic() < deadline, f"timed out waiting for {until}"
        time.sleep(0.1)
    return value


def test_a_generated_client_submits_approves_decides_a_tool_call_and_reads_the_status(web, generated):
    UserFactory(username="ide", password=PASSWORD)
    api = importlib.import_module(f"{PACKAGE}.api")
    models = importlib.import_module(f"{PACKAGE}.models")
    from_api = {name: importlib.import_module(f"{PACKAGE}.api.{group}.{name}") for group, name in _OPERATIONS}
    anonymous = generated.Client(base_url=web.url)
    token = from_api["auth_token_create"].sync(
        client=anonymous, body=models.TokenRequestRequest(username="ide", password=PASSWORD)
    )
    client = generated.AuthenticatedClient(base_url=web.url, token=token.token, prefix="Token")
    assert api is not None

    call = {"tool": "write_file", "arguments": {"path": "lib/main.dart"}}
    body = models.PlanSubmitRequest.from_dict(
        {
            "goal": "Generated client",
            "subtasks": [
                {
                    "key": "edit",
                    "description": "Edit",
                    "agent": "script",
                    "input": {"tool_calls": [call], "result": "edited"},
                }
            ],
        }
    )
    plan = from_api["plans_create"].sync(client=client, body=body)
    assert word(plan.status) == "draft"
    approved = from_api["plans_approve_create"].sync(str(plan.id), client=client)
    assert word(approved.status) == "in_progress"

    def pending():
        page = from_api["approvals_list"].sync(client=client, plan=plan.id, status=models.ApprovalsListStatus.PENDING)
        return [approval for approval in page.results if word(approval.kind) == "tool_call"]

    [approval] = wait(pending)
    assert (approval.tool, approval.arguments) == ("write_file", {"path": "lib/main.dart"})
    decided = from_api["approvals_approve_create"].sync(
        str(approval.id), client=client, body=models.ApproveRequest.from_dict({"result": {"bytes": 120}})
    )
    assert word(decided.status) == "approved"

    status = wait(lambda: _finished(from_api["plans_status_retrieve"].sync(str(plan.id), client=client)))
    assert (word(status.status), status.progress.done, status.progress.percentage) == ("completed", 1, 100.0)
    detail = from_api["plans_retrieve"].sync(str(plan.id), client=client)
    assert detail.subtasks[0].result == {"result": "edited", "tool_results": [{"bytes": 120}]}


_OPERATIONS = [
    ("auth", "auth_token_create"),
    ("plans", "plans_create"),
    ("plans", "plans_approve_create"),
    ("plans", "plans_status_retrieve"),
    ("plans", "plans_retrieve"),
    ("approvals", "approvals_list"),
    ("approvals", "approvals_approve_create"),
]


def word(value):
    """Return a status as its word, whether the schema made it an enum or a string."""
    return getattr(value, "value", value)


def _finished(status):
    return status if word(status.status) in ("completed", "failed", "cancelled") else None
