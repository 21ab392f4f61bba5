"""This process's event loop thread, for sync code (a Celery pool process) that drives an async client.

The `mcp` SDK is asynchronous: its sessions live in one event loop per process, run by a
thread (an anyio blocking portal) started on first use; sync code submits coroutines and
waits for their results. A forked child starts its own loop: the parent's thread does not
run there.
"""

import os
import threading
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

T = TypeVar("T")


class EventLoop:
    """The event loop thread of this process, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stack: ExitStack | None = None
        self._portal: BlockingPortal | None = None

    def portal(self) -> BlockingPortal:
        with self._lock:
            if self._portal is None:
                self._stack = ExitStack()
                self._portal = self._stack.enter_context(start_blocking_portal(name="mcp"))
            return self._portal

    def run(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `function(*args)` in the loop and return its result; cancel it if this thread is interrupted."""
        future = self.portal().start_task_soon(function, *args)
        try:
            return future.result()
        except BaseException:
            # A soft time limit (raised by a signal in this thread) must not leave the call running.
            future.cancel()
            raise

    def close(self) -> None:
        """Stop the loop's thread once the tasks left in it are done."""
        with self._lock:
            stack, self._stack, self._portal = self._stack, None, None
        if stack is not None:
            stack.close()

    def forget(self) -> None:
        """Drop the parent's loop in a forked child, where its thread does not run."""
        self._lock = threading.Lock()
        self._stack = self._portal = None


event_loop = EventLoop()
os.register_at_fork(after_in_child=event_loop.forget)
