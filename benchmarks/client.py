"""The service as its users reach it: the REST API over HTTP, with a token, and the plans' rows."""

import json
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import urllib3
from django.contrib.auth.models import User

from plans.models import Plan

FINISHED = ("completed", "failed", "cancelled")
T = TypeVar("T")
R = TypeVar("R")


class Response:
    """What a request answered: its status, headers and body."""

    def __init__(self, answer: urllib3.BaseHTTPResponse) -> None:
        self.status_code = answer.status
        self.headers = answer.headers
        self.content = answer.data

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Api:
    """An authenticated client of /api/v1/ (keep-alive; make one per thread).

    On urllib3, whose request costs the client a third of httpx's CPU: the benchmarks' client
    threads share the machine's cores with the service they measure.
    """

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token
        address = urlsplit(base_url)
        self.http = urllib3.HTTPConnectionPool(
            address.hostname or "127.0.0.1",
            address.port,
            maxsize=1,
            timeout=urllib3.Timeout(total=300),
            headers={"Authorization": f"Token {token}"},
        )

    @classmethod
    def login(cls, base_url: str) -> "Api":
        """Make a user with Django's own model and get its token from the API."""
        username, password = f"bench-{time.time_ns()}", secrets.token_urlsafe(12)
        User.objects.create_user(username=username, password=password)
        # A fresh web process loads the app on its first request, and checking a password is slow
        # on purpose: on a busy machine this takes seconds.
        response = httpx.post(
            f"{base_url}/api/v1/auth/token/", json={"username": username, "password": password}, timeout=120
        )
        response.raise_for_status()
        return cls(base_url, response.json()["token"])

    def copy(self) -> "Api":
        return Api(self.base_url, self.token)

    def send(self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None) -> Response:
        """Send a request to /api/v1`path` (with `json` as its body) and return its answer, whatever its status."""
        # Headers given replace the pool's: the token goes with them.
        sent = {**self.http.headers, **headers} if headers else None
        return Response(self.http.request(method, f"/api/v1{path}", json=json, headers=sent, redirect=False))

    def request(self, method: str, path: str, **kwargs: Any) -> Response:
        """Send a request as send() does; raise unless it succeeded."""
        response = self.send(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response

    def submit(self, plan: dict[str, Any]) -> str:
        return self.request("POST", "/plans/", json=plan).json()["id"]

    def approve_plan(self, plan_id: str) -> None:
        self.request("POST", f"/plans/{plan_id}/approve/")

    def approve(self, approval_id: str) -> None:
        self.request("POST", f"/approvals/{approval_id}/approve/", json={"result": "ok"})

    def close(self) -> None:
        self.http.close()


def in_threads(api: Api, items: Sequence[T], call: Callable[[Api, T], R], threads: int = 8) -> list[R]:
    """Call `call(api, item)` for every item from `threads` client threads, each with its own connection."""
    shares = [items[i::threads] for i in range(threads)]

    def work(share: Sequence[T]) -> list[R]:
        client = api.copy()
        try:
            return [call(client, item) for item in share]
        finally:
            client.close()

    with ThreadPoolExecutor(threads) as pool:
        done = list(pool.map(work, shares))
    # Back in the order of `items`.
    results: list[R] = [None] * len(items)  # type: ignore[list-item]
    for offset, share_results in enumerate(done):
        results[offset::threads] = share_results
    return results


def wait_finished(plan_ids: Iterable[str], timeout: float = 1800, poll: float = 0.05) -> float:
    """Wait until every plan has finished; return the wall-clock time the last one finished at.

    The finish time is the plan's `completed_at`, written by the worker that finished it,
    so polling does not blur the figure. Raise when a plan did not complete.
    """
    ids = list(plan_ids)
    deadline = time.monotonic() + timeout
    while Plan.objects.filter(pk__in=ids).exclude(status__in=FINISHED).exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ids)} plans did not finish within {timeout:.0f}s")
        time.sleep(poll)
    rows = list(Plan.objects.filter(pk__in=ids).values_list("status", "completed_at"))
    failed = [status for status, _ in rows if status != "completed"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(ids)} plans ended {sorted(set(failed))}, not completed")
    return max(completed_at.timestamp() for _, completed_at in rows if completed_at is not None)
