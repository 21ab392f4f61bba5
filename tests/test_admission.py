"""The web process's bound on requests worked on at once (config/admission.py), on a real event loop."""

import asyncio

import pytest

from config.admission import Admission


class App:
    """An ASGI app whose requests wait for `go`, then start a response and stream until `end`."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.go = asyncio.Event()
        self.end = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        self.inside += 1
        self.most = max(self.most, self.inside)
        await self.go.wait()
        self.inside -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await self.end.wait()  # a stream: its place is given back once the headers are out
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _drive(limit: int, requests: int) -> tuple[App, list[dict]]:
    app = App()
    admission = Admission(app, limit=limit)
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    tasks = [asyncio.create_task(admission({"type": "http"}, receive, send)) for _ in range(requests)]
    await asyncio.sleep(0.05)
    assert app.most == limit  # the others queue
    app.go.set()
    await asyncio.sleep(0.05)
    # Every request got in, as the streams before them gave their places back on starting.
    assert sum(message["type"] == "http.response.start" for message in sent) == requests
    app.end.set()
    await asyncio.gather(*tasks)
    return app, sent


def test_at_most_the_limit_are_worked_on_at_once_and_streams_give_their_place_back():
    app, sent = asyncio.run(_drive(limit=3, requests=10))
    assert app.most == 3
    assert sum(message["type"] == "http.response.body" for message in sent) == 10


def test_a_request_that_fails_before_its_response_gives_its_place_back():
    async def failing(scope, receive, send) -> None:
        raise RuntimeError("view crashed")

    async def run() -> int:
        admission = Admission(failing, limit=1)
        for _ in range(3):
            with pytest.raises(RuntimeError):  # a place not given back would hang the next one (TimeoutError)
                await asyncio.wait_for(admission({"type": "http"}, None, None), timeout=1)
        assert admission._places is not None
        return admission._places._value

    assert asyncio.run(run()) == 1


def test_lifespan_and_websocket_scopes_pass_and_zero_turns_the_bound_off():
    seen = []

    async def app(scope, receive, send) -> None:
        seen.append(scope["type"])

    async def run() -> None:
        await Admission(app, limit=1)({"type": "lifespan"}, None, None)
        unbounded = Admission(app, limit=0)
        await asyncio.gather(*(unbounded({"type": "http"}, None, None) for _ in range(5)))

    asyncio.run(run())
    assert seen == ["lifespan"] + ["http"] * 5
