"""Webhooks: every event of a plan with a callback_url is POSTed, signed, and retried until taken."""

import hashlib
import hmac
import json

import pytest
from django.conf import settings

from execution.webhooks import SIGNATURE_HEADER
from tests.support.factories import subtask
from tests.support.flows import finished, start, wait_for
from tests.support.http import QuietHandler, local_server

pytestmark = pytest.mark.usefixtures("engine")


@pytest.fixture
def receiver():
    """A local endpoint that records deliveries; it answers 500 to the first `failures` of them."""
    state = {"deliveries": [], "failures": 0, "refused": 0}

    class Handler(QuietHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if state["refused"] < state["failures"]:
                state["refused"] += 1
                self.send_response(500)
            else:
                state["deliveries"].append((dict(self.headers), body))
                self.send_response(204)
            self.end_headers()

    with local_server(Handler) as server:
        state["url"] = f"http://127.0.0.1:{server.server_port}/hook"
        yield state


def test_each_event_is_delivered_signed(receiver):
    plan = finished(start(subtask("a"), subtask("b", "a"), callback_url=receiver["url"]))
    seqs = sorted(plan.events.values_list("seq", flat=True))
    wait_for(lambda: len(receiver["deliveries"]) == len(seqs), timeout=30)

    received = []
    for headers, body in receiver["deliveries"]:
        expected = "sha256=" + hmac.new(settings.WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers[SIGNATURE_HEADER] == expected
        document = json.loads(body)
        assert headers["X-Plans-Event"] == document["type"]
        assert document["plan_id"] == str(plan.pk)
        received.append(document["seq"])
    assert sorted(received) == seqs


def test_a_failing_receiver_is_retried(receiver):
    receiver["failures"] = 3
    plan = finished(start(subtask("a"), callback_url=receiver["url"]))
    total = plan.events.count()
    wait_for(lambda: len(receiver["deliveries"]) == total, timeout=30)
    assert receiver["refused"] == 3
    assert sorted(json.loads(body)["seq"] for _, body in receiver["deliveries"]) == list(range(1, total + 1))
