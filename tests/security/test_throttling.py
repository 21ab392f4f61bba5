"""A flood of logins: the token endpoint and the admin login are limited per client address, across web processes."""

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from tests.security.conftest import TOKEN_RATE, client_from
from tests.support.factories import UserFactory

TOKEN = "/api/v1/auth/token/"


def guesses(client, count: int, **headers) -> list:
    return [
        client.post(TOKEN, json={"username": "victim", "password": f"guess-{n}"}, headers=headers) for n in range(count)
    ]


def test_token_flood_is_throttled_per_client_address(guarded):
    with client_from("127.0.0.1", guarded.first.url) as flooder:
        answers = guesses(flooder, TOKEN_RATE + 3)
    assert [answer.status_code for answer in answers[:TOKEN_RATE]] == [400] * TOKEN_RATE
    throttled = answers[TOKEN_RATE:]
    assert {answer.status_code for answer in throttled} == {429}
    assert throttled[-1].json()["error"]["code"] == "throttled"
    assert int(throttled[-1].headers["Retry-After"]) > 0
    # Another client address is not held back by the flood.
    with client_from("127.0.0.2", guarded.first.url) as bystander:
        assert guesses(bystander, 1)[0].status_code == 400


def test_token_flood_split_across_web_processes_is_counted_once(guarded):
    with client_from("127.0.0.3", guarded.first.url) as first:
        assert {answer.status_code for answer in guesses(first, TOKEN_RATE)} == {400}
    with client_from("127.0.0.3", guarded.second.url) as second:
        answer = guesses(second, 1)[0]
    assert answer.status_code == 429
    assert answer.json()["error"]["code"] == "throttled"


def test_a_forged_forwarded_for_does_not_make_a_new_client(guarded):
    with client_from("127.0.0.4", guarded.first.url) as forger:
        answers = [
            forger.post(
                TOKEN,
                json={"username": "victim", "password": "guess"},
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
            )
            for n in range(TOKEN_RATE + 2)
        ]
    assert [answer.status_code for answer in answers[TOKEN_RATE:]] == [429, 429]


@pytest.mark.django_db
def test_behind_one_proxy_each_forwarded_client_is_counted_apart(settings, monkeypatch):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    # DRF reads the rates into the throttle class when it is imported.
    rate = 2
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "1000/minute", "token": f"{rate}/minute"})
    cache.clear()
    try:
        client = APIClient(REMOTE_ADDR="10.0.0.2")  # the proxy
        body = {"username": "victim", "password": "guess"}
        flood = [
            client.post(TOKEN, body, format="json", HTTP_X_FORWARDED_FOR="203.0.113.9, 203.0.113.7").status_code
            for _ in range(rate + 1)
        ]
        assert flood[-1] == 429
        # The address the proxy saw counts, not what the client wrote before it.
        forged = client.post(TOKEN, body, format="json", HTTP_X_FORWARDED_FOR="203.0.113.8, 203.0.113.7")
        assert forged.status_code == 429
        other = client.post(TOKEN, body, format="json", HTTP_X_FORWARDED_FOR="203.0.113.9, 203.0.113.6")
        assert other.status_code == 400
    finally:
        cache.clear()


def login(client, username: str, password: str):
    client.get("/admin/login/")
    return client.post(
        "/admin/login/?next=/admin/",
        data={
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
            "username": username,
            "password": password,
            "next": "/admin/",
        },
    )


@pytest.mark.django_db(transaction=True)
def test_admin_login_guessing_is_locked_out_per_client_address(guarded, settings):
    UserFactory(username="root", password="the-right-password", is_staff=True, is_superuser=True)
    with client_from("127.0.0.5", guarded.first.url) as guesser:
        tries = [login(guesser, "root", f"guess-{n}").status_code for n in range(settings.AXES_FAILURE_LIMIT)]
        # The form again with its error, until the failure that reaches the limit locks the address out.
        assert tries == [200] * (settings.AXES_FAILURE_LIMIT - 1) + [429]
        locked = login(guesser, "root", "the-right-password")
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0
    # The lockout is the address's: the owner of the password, elsewhere, logs in.
    with client_from("127.0.0.6", guarded.second.url) as owner:
        welcome = login(owner, "root", "the-right-password")
    assert welcome.status_code == 302
    assert welcome.headers["Location"] == "/admin/"
