"""Webhooks: signed per owner (Standard Webhooks) so they cannot be replayed or forged, bounded in time and size."""

import logging
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import standardwebhooks.webhooks
from rest_framework.test import APIClient
from standardwebhooks import Webhook, WebhookVerificationError

from execution.services import plan_submit
from execution.webhook_targets import address_problem, target_problem
from execution.webhooks import SIGNATURE_HEADER, WebhookFailed, webhook_deliver
from plans.models import Plan
from tests.support.factories import UserFactory, plan_data, subtask
from tests.support.flows import wait_for


@pytest.fixture
def receiver():
    """A local endpoint that records each delivery's headers and body and answers 204."""
    deliveries: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            deliveries.append(({key.lower(): value for key, value in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", deliveries
    server.shutdown()


def new_secret(user) -> str:
    client = APIClient()
    client.force_authenticate(user)
    answer = client.post("/api/v1/webhook-secret/")
    assert answer.status_code == 201, answer.content
    assert answer["Cache-Control"] == "no-store"
    return answer.json()["secret"]


def delivered(owner, url: str) -> Plan:
    """Submit a draft plan with a callback_url and deliver its first event here (no worker needed)."""
    plan = plan_submit(owner=owner, data=plan_data(subtask("a"), callback_url=url))
    webhook_deliver(plan_id=plan.pk, seq=1)
    return plan


@pytest.mark.django_db
def test_a_delivery_verifies_with_its_owners_secret_and_no_other(receiver):
    url, deliveries = receiver
    alice, mallory = UserFactory(), UserFactory()
    alices, mallorys = new_secret(alice), new_secret(mallory)
    delivered(alice, url)
    headers, body = deliveries[-1]
    assert Webhook(alices).verify(body, headers)["seq"] == 1
    with pytest.raises(WebhookVerificationError):
        Webhook(mallorys).verify(body, headers)
    # Nothing a receiver of the deployment-wide secret could use to forge Alice's deliveries.
    assert SIGNATURE_HEADER.lower() not in headers
    # The secret is shown once: reading it back tells only that it exists.
    client = APIClient()
    client.force_authenticate(alice)
    status = client.get("/api/v1/webhook-secret/").json()
    assert status["configured"] is True
    assert alices not in str(status)


@pytest.mark.django_db
def test_a_replayed_or_retimed_delivery_is_refused_by_the_receiver(receiver, monkeypatch):
    url, deliveries = receiver
    owner = UserFactory()
    secret = new_secret(owner)
    delivered(owner, url)
    headers, body = deliveries[-1]
    # Moved to now: the signature covers the timestamp.
    retimed = {**headers, "webhook-timestamp": str(int(time.time()) + 1)}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, retimed)

    # Sent again as it was, ten minutes later: too old.
    class Later(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz or UTC) + timedelta(minutes=10)

    monkeypatch.setattr(standardwebhooks.webhooks, "datetime", Later)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


@pytest.mark.django_db
def test_a_rotated_secret_keeps_signing_until_the_overlap_ends(receiver, settings):
    url, deliveries = receiver
    owner = UserFactory()
    old = new_secret(owner)
    new = new_secret(owner)
    plan = delivered(owner, url)
    headers, body = deliveries[-1]
    assert Webhook(old).verify(body, headers)
    assert Webhook(new).verify(body, headers)
    settings.WEBHOOK_SECRET_OVERLAP_S = 0
    newest = new_secret(owner)
    webhook_deliver(plan_id=plan.pk, seq=1)
    headers, body = deliveries[-1]
    assert Webhook(newest).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body, headers)


@pytest.mark.parametrize("address", ["fec0::1", "fed3:1234::5", "feff::1"])
def test_a_site_local_address_is_refused(address, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = []
    assert "site-local" in address_problem("hooks.example", address)
    assert target_problem(f"http://[{address}]/hook")


@pytest.mark.django_db
def test_a_callback_url_with_a_token_is_not_written_to_the_logs(caplog, settings):
    owner = UserFactory()
    plan = plan_submit(owner=owner, data=plan_data(subtask("a"), callback_url="http://127.0.0.1:9/hook"))
    silent = socket.create_server(("127.0.0.1", 0))  # connections are taken, never answered
    token_url = (
        f"http://hook:pa55word@127.0.0.1:{silent.getsockname()[1]}/services/sk-sekrit-token?token=sk-sekrit-token"
    )
    Plan.objects.filter(pk=plan.pk).update(callback_url=token_url)
    caplog.set_level(logging.DEBUG)
    settings.WEBHOOK_TIMEOUT_S = 0.5
    try:
        with pytest.raises(WebhookFailed) as failed:
            webhook_deliver(plan_id=plan.pk, seq=1)
        # A refused target is logged (not retried).
        settings.WEBHOOK_ALLOWED_HOSTS = []
        webhook_deliver(plan_id=plan.pk, seq=1)
    finally:
        silent.close()
    written = caplog.text + str(failed.value)
    assert "not sent to http://127.0.0.1" in written
    assert "sk-sekrit-token" not in written
    assert "pa55word" not in written


@pytest.mark.django_db
def test_a_huge_answer_is_not_read_whole():
    owner = UserFactory()
    size = 256 * 1024 * 1024
    sent = {"bytes": 0}
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
            chunk = b"\0" * 65536
            try:
                while sent["bytes"] < size:
                    connection.sendall(chunk)
                    sent["bytes"] += len(chunk)
            except OSError:
                pass

    server = threading.Thread(target=answer, daemon=True)
    server.start()
    plan = plan_submit(
        owner=owner,
        data=plan_data(subtask("a"), callback_url=f"http://127.0.0.1:{listener.getsockname()[1]}/hook"),
    )
    webhook_deliver(plan_id=plan.pk, seq=1)
    server.join(timeout=60)
    listener.close()
    assert sent["bytes"] < size / 4


@pytest.fixture
def drip_receiver():
    """A receiver that answers its first delivery one header byte at a time, forever, and later ones at once."""
    state = {"connections": 0, "cut": 0, "taken": []}
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(connection: socket.socket) -> None:
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(65536)
            head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            delivery = next(
                line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("webhook-id:")
            )
            if state["cut"] == 0:
                connection.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                try:
                    while not stop.is_set():
                        connection.sendall(b"z")
                        time.sleep(0.2)
                except OSError:
                    state["cut"] += 1
                return
            state["taken"].append(delivery)
            connection.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            state["connections"] += 1
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    yield state
    stop.set()
    listener.close()


@pytest.mark.slow
@pytest.mark.usefixtures("engine")
def test_a_slow_drip_receiver_is_cut_off_and_the_delivery_retried(drip_receiver):
    owner = UserFactory()
    plan = plan_submit(owner=owner, data=plan_data(subtask("a"), callback_url=drip_receiver["url"]))
    wait_for(lambda: drip_receiver["cut"] >= 1, timeout=60, message="the webhook worker to cut the drip")
    wait_for(lambda: f"{plan.pk}:1" in drip_receiver["taken"], timeout=60, message="the delivery to be retried")
