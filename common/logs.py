"""Log lines that say which plan, subtask or approval they are about, as text or as JSON (LOG_FORMAT).

The entry points (a request's view, a Celery task) put the ids they know in a context variable;
LogContextFilter copies them onto every record logged meanwhile, and JsonFormatter writes one
JSON object per line: time, level, logger, message, then those ids and any `extra` fields.
"""

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as BaseJsonFormatter

# The ids a log line may carry, in this order.
CONTEXT_KEYS = ("plan_id", "subtask_id", "approval_id", "task_id", "task_name")

_context: ContextVar[dict[str, str]] = ContextVar("log_context", default={})  # noqa: B039 - never mutated


def log_context_push(**ids: Any) -> Token[dict[str, str]]:
    """Add ids (those not None) to the current context; return the token that undoes it."""
    known = {key: str(value) for key, value in ids.items() if value is not None}
    return _context.set({**_context.get(), **known})


def log_context_pop(token: Token[dict[str, str]]) -> None:
    _context.reset(token)


@contextlib.contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Tag every log line written inside with these ids."""
    token = log_context_push(**ids)
    try:
        yield
    finally:
        log_context_pop(token)


class LogContextFilter(logging.Filter):
    """Copy the current context's ids onto each record (a handler's filter: it sees propagated records too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(BaseJsonFormatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, then the context and extras."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("reserved_attrs", [*RESERVED_ATTRS, "taskName", "color_message"])
        super().__init__(*args, **kwargs)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.getMessage()
        super().add_fields(log_data, record, message_dict)
        log_data.pop("levelname", None)
