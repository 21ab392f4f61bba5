"""Live event streams: a cap per user, a maximum age, one read per plan per wake, and no 500 for a bad Last-Event-ID."""

import asyncio
import contextlib
import time

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction

from api import stream
from execution.events import event_append
from execution.services import plan_submit
from tests.security.conftest import SHORT_STREAM_AGE_S, STREAMS_PER_USER, client_from
from tests.support.clients import token_of
from tests.support.factories import UserFactory, plan_data, subtask

SSE = {"Accept": "text/event-stream"}


def draft(owner):
    return plan_submit(owner=owner, data=plan_data(subtask("a")))


def events_url(plan) -> str:
    return f"/api/v1/plans/{plan.pk}/events/"


def read_messages(response, *, until: int, timeout: float = 20) -> list[dict[str, str]]:
    """Read SSE messages until `until` of them have an id (or the stream ends); return them all."""
    messages: list[dict[str, str]] = []
    current: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    for line in response.iter_lines():
        if not line:
            if current:
                messages.append(current)
            current = {}
            if sum("id" in message for message in messages) >= until or time.monotonic() > deadline:
                break
            continue
        name, _, value = line.partition(":")
        current[name] = value.strip()
    return messages


@pytest.mark.django_db(transaction=True)
def test_fifty_streams_from_one_user_are_capped(guarded):
    owner = UserFactory()
    plan = draft(owner)
    headers = {**SSE, "Authorization": f"Token {token_of(owner)}"}
    with client_from("127.0.0.1", guarded.first.url) as client, contextlib.ExitStack() as open_streams:
        answers = [
            open_streams.enter_context(client.stream("GET", events_url(plan), headers=headers)) for _ in range(50)
        ]
        statuses = [answer.status_code for answer in answers]
        assert statuses.count(200) == STREAMS_PER_USER
        assert statuses.count(429) == 50 - STREAMS_PER_USER
        refused = answers[statuses.index(429)]
        assert int(refused.headers["Retry-After"]) > 0
        assert '"code": "throttled"' in refused.read().decode()
        # Someone else is not held back by this user's streams.
        other = UserFactory()
        with client.stream(
            "GET", events_url(draft(other)), headers={**SSE, "Authorization": f"Token {token_of(other)}"}
        ) as theirs:
            assert theirs.status_code == 200
        # A stream closed frees its place.
        answers[0].close()
        retried = None
        for _ in range(100):
            with client.stream("GET", events_url(plan), headers=headers) as again:
                retried = again.status_code
            if retried == 200:
                break
            time.sleep(0.05)
        assert retried == 200


@pytest.mark.django_db(transaction=True)
def test_a_stream_ends_at_its_maximum_age_and_resumes_after_its_last_event(guarded):
    owner = UserFactory()
    plan = draft(owner)
    headers = {**SSE, "Authorization": f"Token {token_of(owner)}"}
    with client_from("127.0.0.1", guarded.second.url, timeout=SHORT_STREAM_AGE_S * 10) as client:
        started = time.monotonic()
        with client.stream("GET", events_url(plan), headers=headers) as first:
            seen = read_messages(first, until=10**6, timeout=SHORT_STREAM_AGE_S * 10)
        assert time.monotonic() - started < SHORT_STREAM_AGE_S * 10, "the stream did not end"
        ids = [int(message["id"]) for message in seen if "id" in message]
        assert ids
        with transaction.atomic():
            event_append(plan_id=plan.pk, type="test.later", payload={})
        with client.stream("GET", events_url(plan), headers={**headers, "Last-Event-ID": str(ids[-1])}) as resumed:
            again = read_messages(resumed, until=1)
    assert [int(message["id"]) for message in again if "id" in message] == [ids[-1] + 1]


@pytest.mark.django_db(transaction=True)
# "²" as Latin-1, the way HTTP header bytes reach Django: str.isdigit() is true for it, int() refuses it.
@pytest.mark.parametrize("header", ["²".encode("latin-1"), b"9" * 5000, b"99999999999999999999", b"-1", b"1e3"])
def test_a_bad_last_event_id_is_ignored(guarded, header):
    owner = UserFactory()
    plan = draft(owner)
    headers = {**SSE, "Authorization": f"Token {token_of(owner)}", "Last-Event-ID": header}
    with (
        client_from("127.0.0.1", guarded.first.url) as client,
        client.stream("GET", events_url(plan) + "?after=0", headers=headers) as answer,
    ):
        assert answer.status_code == 200
        first = read_messages(answer, until=1)
    assert [message["id"] for message in first if "id" in message] == ["1"]


@pytest.mark.django_db(transaction=True)
def test_a_commit_is_read_once_for_all_the_streams_of_its_plan(monkeypatch, settings):
    plan = draft(UserFactory())
    existing = plan.events.count()
    reads: list[int] = []
    real = stream._events_after

    def counted(plan_id, after):
        reads.append(after)
        return real(plan_id, after)

    monkeypatch.setattr(stream, "_events_after", counted)

    def append() -> None:
        with transaction.atomic():
            event_append(plan_id=plan.pk, type="test.shared", payload={})

    async def scenario() -> list[str]:
        streams = [stream.event_stream(str(plan.pk), after=0, max_age_s=60) for _ in range(5)]
        for each in streams:
            for _ in range(1 + existing):  # the retry line, then what is there already
                await asyncio.wait_for(anext(each), timeout=20)
        waiting = [asyncio.ensure_future(anext(each)) for each in streams]
        await asyncio.sleep(0.5)  # every stream waits, and the listener listens
        reads.clear()
        await sync_to_async(append)()
        messages = await asyncio.wait_for(asyncio.gather(*waiting), timeout=20)
        for each in streams:
            await each.aclose()
        return messages

    messages = asyncio.run(scenario())
    assert all("event: test.shared" in message for message in messages)
    assert len(reads) == 1
