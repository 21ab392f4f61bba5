"""A context variable's value for the length of a block."""

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def context_bound(var: ContextVar[T], value: T) -> Iterator[T]:
    """Set `var` to `value` inside the block (yielding it), and back to what it was when the block ends, however."""
    token = var.set(value)
    try:
        yield value
    finally:
        var.reset(token)
