"""API callers for tests with real servers: over HTTP to uvicorn, or through the whole Django stack in this process.

uvicorn runs Django's sync views one at a time (the ASGI handler's single thread for sync
code), so requests over HTTP to one server never overlap at the database. Races that must
meet there come, in part, from threads of the test process, each on its own connection.
"""

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from django.contrib.auth.models import Permission
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.support.factories import UserFactory

T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any

    @property
    def code(self) -> str:
        """Return the error code of an error answer ("" for a success)."""
        return self.body["error"]["code"] if isinstance(self.body, dict) and "error" in self.body else ""


def token_of(user) -> str:
    return Token.objects.get_or_create(user=user)[0].key


class HttpCaller:
    """Calls the API over HTTP, as a client does, with the user's own token."""

    def __init__(self, base_url: str, user) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token_of(user)}"

    def post(self, path: str, body: Any = None) -> Answer:
        response = self.session.post(self.base_url + path, json=body if body is not None else {}, timeout=60)
        return Answer(response.status_code, response.json())

    def get(self, path: str, params: dict[str, Any] | None = None) -> Answer:
        response = self.session.get(self.base_url + path, params=params, timeout=60)
        return Answer(response.status_code, response.json())

    def patch(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Answer:
        response = self.session.patch(self.base_url + path, json=body, headers=headers, timeout=60)
        return Answer(response.status_code, response.json())

    def delete(self, path: str) -> Answer:
        response = self.session.delete(self.base_url + path, timeout=60)
        return Answer(response.status_code, response.json() if response.content else None)


class LocalCaller:
    """Calls the API through Django's whole request stack in this process, with the user's own token."""

    def __init__(self, user) -> None:
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Token {token_of(user)}")

    def post(self, path: str, body: Any = None) -> Answer:
        response = self.client.post(path, body if body is not None else {}, format="json")
        return Answer(response.status_code, response.json())

    def patch(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Answer:
        response = self.client.patch(path, body, format="json", headers=headers)
        return Answer(response.status_code, response.json())

    def get(self, path: str) -> Answer:
        response = self.client.get(path)
        return Answer(response.status_code, response.json())


def approver(username: str):
    """Return a user who may decide any approval (the approvals.decide_approval permission)."""
    user = UserFactory(username=username, is_staff=True)
    permission = Permission.objects.get(codename="decide_approval", content_type__app_label="approvals")
    user.user_permissions.add(permission)  # type: ignore[attr-defined]
    return user


def at_once(*calls: Callable[[], T]) -> list[T]:
    """Run each call in a thread of its own, all released together; return their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        try:
            barrier.wait(timeout=30)
            return call()
        finally:
            # Each thread had its own database connection; the test's own stays open.
            connection.close()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))
