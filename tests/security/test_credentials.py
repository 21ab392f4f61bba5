"""Credentials stay out of errors (URLs lose user, password and query); the python agent runs only what is named."""

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from common.redaction import credentials_stripped
from execution.agents.base import AgentError, Fail
from execution.agents.http import HttpAgent
from execution.agents.python import PythonAgent
from plans.models import SubtaskStatus
from scripts.servers import free_port
from tests.support.agent_contexts import context
from tests.support.factories import subtask
from tests.support.flows import finished, start

SECRETS = ("hunter2", "sk-sekrit")


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@pytest.fixture
def answering():
    """A local endpoint answering every POST with the status in `state["status"]` and a body naming a secret URL."""
    state = {"status": 500}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b"upstream https://agent:hunter2@models.example/v1?api_key=sk-sekrit is down"
            self.send_response(state["status"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://agent:hunter2@127.0.0.1:{server.server_port}/step?api_key=sk-sekrit"
    yield state
    server.shutdown()


@pytest.mark.parametrize("status", [500, 429])
def test_an_http_agent_url_with_credentials_stays_out_of_a_retried_error(answering, status):
    answering["status"] = status
    with pytest.raises(AgentError) as raised:
        HttpAgent("http", url=answering["url"], timeout_s=5).run(context())
    assert f"answered {status}" in str(raised.value)
    assert_no_secret(str(raised.value))


@pytest.mark.parametrize("status", [404, 200])
def test_an_http_agent_url_with_credentials_stays_out_of_a_failure(answering, status):
    answering["status"] = status
    step = HttpAgent("http", url=answering["url"], timeout_s=5).run(context())
    assert isinstance(step, Fail)
    assert "127.0.0.1" in step.error
    assert_no_secret(step.error)


def test_an_unreachable_http_agent_url_with_credentials_stays_out_of_the_error():
    url = f"http://agent:hunter2@127.0.0.1:{free_port()}/step?api_key=sk-sekrit"
    with pytest.raises(AgentError) as raised:
        HttpAgent("http", url=url, timeout_s=5).run(context())
    assert "failed" in str(raised.value)
    assert_no_secret(str(raised.value))


def test_credentials_are_stripped_from_free_text():
    text = (
        "POST https://user:hunter2@host.example:8443/hook?token=sk-sekrit failed: "
        "HTTPSConnectionPool(host='host.example', port=8443): Max retries exceeded with url: /hook?token=sk-sekrit "
        "(Authorization: Bearer sk-sekrit-0123456789)"
    )
    stripped = credentials_stripped(text)
    assert_no_secret(stripped)
    assert "https://host.example:8443/hook" in stripped
    assert "with url: /hook " in stripped


@pytest.mark.usefixtures("engine")
def test_an_agent_error_naming_a_url_with_credentials_is_stored_without_them():
    plan = finished(
        start(
            subtask(
                "a",
                agent="python",
                input={"callable": "tests.support.agents.raises_naming_a_url_with_credentials"},
                max_retries=0,
            )
        )
    )
    failed = plan.subtasks.get()
    assert failed.status == SubtaskStatus.FAILED
    assert "https://models.example/v1" in failed.error
    assert_no_secret(failed.error)
    assert_no_secret(str(list(plan.events.values_list("payload", flat=True))))


def test_a_name_imported_into_an_allowed_module_is_not_run(settings):
    settings.EXECUTION_PYTHON_AGENT_MODULES = ["tests.support.agents:*"]
    python = PythonAgent("python")
    assert python.validate_input({"callable": "tests.support.agents.dependency_keys"}) == []
    # Imported there, not defined there: Celery's exception and the agents' base class.
    assert python.validate_input({"callable": "tests.support.agents.SoftTimeLimitExceeded"})
    assert python.validate_input({"callable": "tests.support.agents.BaseAgent"})
    assert isinstance(python.run(context(input={"callable": "tests.support.agents.BaseAgent"})), Fail)
    # Private helpers and submodules are not covered either.
    assert python.validate_input({"callable": "tests.support.agents.time.sleep"})


def test_a_callable_in_a_submodule_of_an_allowed_module_is_not_run(settings):
    settings.EXECUTION_PYTHON_AGENT_MODULES = ["tests.support:*", "tests.support.agents.dependency_keys"]
    python = PythonAgent("python")
    assert python.validate_input({"callable": "tests.support.agents.dependency_keys"}) == []
    assert python.validate_input({"callable": "tests.support.agents.crash"})
    assert python.validate_input({"callable": "tests.processes.current_database_url"})
    assert isinstance(python.run(context(input={"callable": "tests.support.agents.crash"})), Fail)
