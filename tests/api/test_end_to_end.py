"""A plan driven entirely over HTTP, followed on the live event stream, with real workers."""

import json
import queue
import threading
from typing import Any

import httpx
import pytest
from django.db import connection

from scripts.processes import WebServer
from tests.support.factories import UserFactory, plan_data, subtask
from tests.support.flows import wait_for

pytestmark = pytest.mark.usefixtures("engine")


class Stream:
    """Reads a Server-Sent Events stream in a thread; events arrive on a queue."""

    def __init__(self, client: httpx.Client, path: str, headers: dict[str, str] | None = None) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.status: queue.Queue[int] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(client, path, headers or {}), daemon=True)
        self._thread.start()
        assert self.status.get(timeout=10) == 200

    def _read(self, client: httpx.Client, path: str, headers: dict[str, str]) -> None:
        with client.stream("GET", path, headers={"Accept": "text/event-stream", **headers}, timeout=None) as response:
            self.status.put(response.status_code)
            message: dict[str, str] = {}
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if not line:
                    if "data" in message:
                        self.events.put(
                            {"id": int(message["id"]), "event": message["event"], **json.loads(message["data"])}
                        )
                    message = {}
                elif not line.startswith(":"):
                    field, _, value = line.partition(":")
                    message[field] = value.removeprefix(" ")

    def next_of(self, event_type: str, timeout: float = 30, **payload: Any) -> dict[str, Any]:
        """Return the next event of this type whose payload has these values."""
        while True:
            event = self.events.get(timeout=timeout)
            if event["type"] == event_type and all(event["payload"].get(k) == v for k, v in payload.items()):
                return event

    def close(self) -> None:
        self._stop.set()


def connections_of_web() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # inside a transaction the view would not change
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [WebServer.APPLICATION_NAME]
        )
        return cursor.fetchone()[0]


def test_a_plan_over_http_with_a_tool_approval_on_the_event_stream(web):
    UserFactory(username="ide", password="ide-password-1")
    client = httpx.Client(base_url=web.url, timeout=15)
    token = client.post("/api/v1/auth/token/", json={"username": "ide", "password": "ide-password-1"}).json()["token"]
    client.headers["Authorization"] = f"Token {token}"

    tools = {"result": "built", "tool_calls": [{"tool": "run_tests", "arguments": {"suite": "unit"}}]}
    created = client.post("/api/v1/plans/", json=plan_data(subtask("build", input=tools), subtask("ship", "build")))
    assert created.status_code == 201
    plan_id = created.json()["id"]

    stream = Stream(client, f"/api/v1/plans/{plan_id}/events/")
    try:
        assert stream.next_of("plan.created")["id"] == 1
        assert client.post(f"/api/v1/plans/{plan_id}/approve/").status_code == 200

        requested = stream.next_of("approval.requested", kind="tool_call")
        assert requested["payload"]["tool"] == "run_tests"
        assert requested["payload"]["arguments"] == {"suite": "unit"}
        approval_id = requested["payload"]["approval_id"]
        decided = client.post(f"/api/v1/approvals/{approval_id}/approve/", json={"result": {"passed": 42}})
        assert decided.status_code == 200

        completed = stream.next_of("agent.execution.completed")
        assert completed["payload"]["status"] == "completed"
    finally:
        stream.close()

    detail = client.get(f"/api/v1/plans/{plan_id}/").json()
    assert detail["status"] == "completed"
    build = detail["subtasks"][0]
    assert build["result"] == {"result": "built", "tool_results": [{"passed": 42}]}

    # Reconnecting with Last-Event-ID continues right after the last event seen.
    resumed = Stream(client, f"/api/v1/plans/{plan_id}/events/", headers={"Last-Event-ID": str(completed["id"] - 2)})
    try:
        assert resumed.events.get(timeout=10)["id"] == completed["id"] - 1
    finally:
        resumed.close()


def test_idle_streams_hold_no_database_connection(web):
    UserFactory(username="watcher", password="watch-password-1")
    client = httpx.Client(base_url=web.url, timeout=15)
    token = client.post("/api/v1/auth/token/", json={"username": "watcher", "password": "watch-password-1"}).json()[
        "token"
    ]
    client.headers["Authorization"] = f"Token {token}"
    plan_id = client.post("/api/v1/plans/", json=plan_data(subtask("a"))).json()["id"]

    streams = [Stream(client, f"/api/v1/plans/{plan_id}/events/") for _ in range(3)]
    try:
        for stream in streams:
            stream.next_of("approval.requested")
        # One LISTEN connection for the whole process and the one its pool keeps idle; none for the idle
        # streams themselves. A request gives its connection back when it has finished, which may come
        # just after its last byte, and the pool closes what it took beyond one after a while.
        wait_for(lambda: connections_of_web() <= 2, timeout=15, message="idle streams hold connections")
        client.post(f"/api/v1/plans/{plan_id}/cancel/")
        for stream in streams:
            stream.next_of("plan.cancelled")
    finally:
        for stream in streams:
            stream.close()


def test_requests_after_the_database_dropped_the_pooled_connections_are_answered(web):
    UserFactory(username="pooled", password="pooled-password-1")
    client = httpx.Client(base_url=web.url, timeout=15)
    token = client.post("/api/v1/auth/token/", json={"username": "pooled", "password": "pooled-password-1"}).json()
    client.headers["Authorization"] = f"Token {token['token']}"
    assert client.get("/api/v1/agents/").status_code == 200
    # As a database restart would, but leaving the event listener (which reconnects by itself) alone.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s "
            "AND query NOT LIKE 'LISTEN%%'",
            [WebServer.APPLICATION_NAME],
        )
        assert any(ended for (ended,) in cursor.fetchall())
    assert [client.get("/api/v1/agents/").status_code for _ in range(20)] == [200] * 20
