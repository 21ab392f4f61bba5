"""The base of every domain error: a code and an HTTP status the doors answer with."""

from typing import Any


class DomainError(Exception):
    """A rule of the domain refused a request; `code` and `http_status` say how to answer it."""

    code = "invalid"
    http_status = 400

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
