"""Webhook targets: loopback, link-local and private addresses refused at submission and at delivery, unless allowed."""

import socket

import pytest

from execution.models import Event
from execution.services import plan_submit
from execution.webhook_targets import target_problem
from execution.webhooks import WebhookFailed, webhook_deliver
from plans.models import Plan
from tests.api.conftest import client_for
from tests.api.test_plans import PLANS, assert_error
from tests.support.factories import UserFactory, plan_data, subtask
from tests.support.http import QuietHandler, local_server

pytestmark = pytest.mark.django_db

PUBLIC = "93.184.215.14"
REAL_GETADDRINFO = socket.getaddrinfo


def resolving(monkeypatch, answers: dict[str, list[str]]) -> None:
    """Make these host names resolve to these addresses (none: not at all), one per lookup, the last repeating."""

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        if not answers[host]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        address = answers[host].pop(0) if len(answers[host]) > 1 else answers[host][0]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port or 80))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(autouse=True)
def _no_allow_list(settings) -> None:
    settings.WEBHOOK_ALLOWED_HOSTS = []


@pytest.fixture
def api():
    return client_for(UserFactory())


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://127.0.0.2/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://10.1.2.3/hook", "private"),
        ("http://172.16.0.1/hook", "private"),
        ("https://192.168.1.10/hook", "private"),
        ("http://[fd00::1]/hook", "private"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://100.64.0.1/hook", "non-public"),
        ("http://hooks.internal.example/hook", "private"),
    ],
)
def test_a_callback_url_that_is_not_public_is_refused_at_submission(api, monkeypatch, url, kind):
    resolving(monkeypatch, {"hooks.internal.example": ["10.0.0.7"]})
    error = assert_error(
        api.post(PLANS, plan_data(subtask("a"), callback_url=url), format="json"), 400, "validation_error"
    )
    [problem] = error["details"]["callback_url"]
    assert f"a {kind} address" in problem
    assert "WEBHOOK_ALLOWED_HOSTS" in problem
    assert not Plan.objects.exists()


def test_a_callback_url_whose_host_does_not_resolve_is_refused(api, monkeypatch):
    resolving(monkeypatch, {"no-such-host.invalid": []})
    url = "https://no-such-host.invalid/hook"
    error = assert_error(
        api.post(PLANS, plan_data(subtask("a"), callback_url=url), format="json"), 400, "validation_error"
    )
    assert "does not resolve" in error["details"]["callback_url"][0]


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        (["127.0.0.1"], "http://127.0.0.1:9000/hook"),
        (["10.0.0.0/8"], "http://10.20.30.40/hook"),
        (["hooks.internal.example"], "http://hooks.internal.example/hook"),
        (["HOOKS.internal.example."], "http://hooks.internal.example/hook"),
        ([], "https://hooks.public.example/hook"),
    ],
)
def test_public_or_allowed_targets_are_accepted(api, settings, monkeypatch, allowed, url):
    settings.WEBHOOK_ALLOWED_HOSTS = allowed
    resolving(monkeypatch, {"hooks.internal.example": ["10.0.0.7"], "hooks.public.example": [PUBLIC]})
    response = api.post(PLANS, plan_data(subtask("a"), callback_url=url), format="json")
    assert response.status_code == 201, response.content


def test_a_host_with_one_private_address_among_public_ones_is_refused(monkeypatch):
    def getaddrinfo(host, port, *args, **kwargs):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.0.1", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert "a private address" in target_problem("https://split.example/hook")


@pytest.fixture
def receiver():
    """A loopback endpoint that records what it receives; `redirect` makes it answer 307 to another URL."""
    state: dict = {"bodies": [], "redirect": ""}

    class Handler(QuietHandler):
        def do_POST(self):
            state["bodies"].append(self.rfile.read(int(self.headers["Content-Length"])))
            if state["redirect"]:
                self.send_response(307)
                self.send_header("Location", state["redirect"])
            else:
                self.send_response(204)
            self.end_headers()

    with local_server(Handler) as server:
        state["port"] = server.server_port
        yield state


def plan_with_callback(settings, url: str) -> Event:
    """Store a plan whose callback_url was acceptable when it was submitted; return its first event."""
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1", "receiver.example"]
    plan = plan_submit(owner=UserFactory(), data=plan_data(subtask("a"), callback_url=url))
    settings.WEBHOOK_ALLOWED_HOSTS = []
    return plan.events.order_by("seq")[0]


def test_delivery_to_an_address_no_longer_allowed_sends_nothing_and_is_not_retried(settings, receiver):
    event = plan_with_callback(settings, f"http://127.0.0.1:{receiver['port']}/hook")
    webhook_deliver(plan_id=event.plan_id, seq=event.seq)
    assert receiver["bodies"] == []


def test_delivery_checks_the_address_connected_to_when_dns_changes(settings, monkeypatch, receiver):
    """A host public when checked but loopback when connected to (DNS rebinding) gets nothing."""
    event = plan_with_callback(settings, f"http://receiver.example:{receiver['port']}/hook")
    resolving(monkeypatch, {"receiver.example": ["127.0.0.1"]})
    webhook_deliver(plan_id=event.plan_id, seq=event.seq)
    assert receiver["bodies"] == []


def test_delivery_to_an_allowed_address_arrives(settings, receiver):
    event = plan_with_callback(settings, f"http://127.0.0.1:{receiver['port']}/hook")
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.0/8"]
    webhook_deliver(plan_id=event.plan_id, seq=event.seq)
    assert len(receiver["bodies"]) == 1


def test_a_redirect_is_not_followed(settings, receiver):
    event = plan_with_callback(settings, f"http://127.0.0.1:{receiver['port']}/hook")
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    receiver["redirect"] = f"http://127.0.0.1:{receiver['port']}/elsewhere"
    with pytest.raises(WebhookFailed, match="answered 307"):
        webhook_deliver(plan_id=event.plan_id, seq=event.seq)
    assert len(receiver["bodies"]) == 1
