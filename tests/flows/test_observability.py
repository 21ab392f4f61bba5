"""Traces and JSON logs of real web and worker processes: an approval's request and the run it resumes share a trace."""

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from celery import current_app
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from plans.models import Plan
from scripts.processes import WebServer, Worker, current_database_url
from scripts.servers import free_port
from tests.support.clients import token_of
from tests.support.cluster import FAST
from tests.support.factories import UserFactory
from tests.support.flows import finished, pending_approval, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.django_db(transaction=True)]

WORKER_ARGS = ["worker", "--queues", "subtasks,control", "--hostname", "traced@%h", "--concurrency", "1"]
WORKER_ARGS += ["--loglevel", "INFO", "--without-gossip", "--without-mingle"]
ASKS_ONCE = {"fail_times": 1, "tool_calls": [{"tool": "deploy", "arguments": {"env": "prod"}}], "result": "deployed"}


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP collector in this process: it keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        super().__init__(("127.0.0.1", free_port()), ReceiverHandler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def find(self, predicate) -> list[dict]:
        return [span for span in list(self.spans) if predicate(span)]


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
        for resource_spans in request.resource_spans:
            attributes = {item.key: item.value.string_value for item in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.server.spans.append(
                        {"service": attributes.get("service.name"), "name": span.name, "trace": span.trace_id.hex()}
                    )
        body = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def observed(transactional_db, tmp_path) -> Iterator[tuple[Receiver, WebServer, Worker]]:
    """A web process and a worker that trace to the receiver and log JSON lines."""
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    env = {
        **os.environ,
        **FAST,
        "DATABASE_URL": current_database_url(),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    current_app.control.purge()
    worker = Worker(
        "traced",
        WORKER_ARGS,
        env,
        tmp_path,
        queues=("subtasks", "control"),
    )
    try:
        with WebServer.running(env, tmp_path) as web:
            wait_for(lambda: current_app.control.ping(destination=[worker.hostname], timeout=0.5), timeout=60)
            yield receiver, web, worker
    finally:
        worker.stop()
        receiver.shutdown()


def json_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]


def test_an_approval_request_and_the_run_it_resumes_share_a_trace_and_log_their_ids(observed):
    receiver, web, worker = observed
    owner = UserFactory()
    api = requests.Session()
    api.headers["Authorization"] = f"Token {token_of(owner)}"
    plan = {
        "goal": "traced",
        "requires_approval": False,
        "subtasks": [{"key": "deploy", "description": "deploy", "agent": "script", "input": ASKS_ONCE}],
    }
    created = api.post(f"{web.url}/api/v1/plans/", json=plan, timeout=30)
    assert created.status_code == 201, created.text
    plan_id = created.json()["id"]
    approval = pending_approval(Plan.objects.get(pk=plan_id), "deploy", timeout=60)
    decided = api.post(f"{web.url}/api/v1/approvals/{approval.pk}/approve/", json={"result": "ok"}, timeout=30)
    assert decided.status_code == 200, decided.text
    assert finished(Plan.objects.get(pk=plan_id), timeout=60).status == "completed"

    def approve_spans() -> list[dict]:
        return receiver.find(lambda span: span["service"] == "plans-web" and "approve" in span["name"])

    [request] = wait_for(approve_spans, timeout=30, message="the approve request's span")
    resumed = wait_for(
        lambda: receiver.find(
            lambda span: (
                span["trace"] == request["trace"]
                and span["service"] == "plans-worker"
                and span["name"] == "run/execution.run_subtask"
            )
        ),
        timeout=30,
        message=f"the resumed run's span in trace {request['trace']} (spans: {receiver.spans[-20:]})",
    )
    assert resumed
    # The database statements of the request are in its trace too.
    assert receiver.find(
        lambda span: span["trace"] == request["trace"] and span["name"].startswith(("UPDATE", "SELECT"))
    )

    subtask_id = str(approval.subtask_id)
    web_log, worker_log = web.log, worker.log
    decision = wait_for(
        lambda: [line for line in json_lines(web_log) if line.get("logger") == "approvals.services"],
        message="the decision's log line",
    )
    assert decision[-1]["approval_id"] == str(approval.pk)
    assert {"time", "level", "message"} <= decision[-1].keys()
    assert all(line.startswith("{") for line in web_log.read_text().splitlines() if line.strip())
    failed = [line for line in json_lines(worker_log) if "attempt 1 failed" in line.get("message", "")]
    assert failed, worker.tail()
    assert (failed[0]["plan_id"], failed[0]["subtask_id"]) == (plan_id, subtask_id)
    assert failed[0]["task_name"] == "execution.run_subtask"
