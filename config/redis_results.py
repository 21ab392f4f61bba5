"""Celery's Redis result backend, without a subscription for every task a process sends.

Outside a worker, Celery's Redis backend subscribes to the result channel of each task it
sends, so that a later `AsyncResult.get()` could wait on it without polling. The service never
waits on a task's result (the engine keeps outcomes in its own tables; Redis only carries the
chords' bookkeeping), so in the web every decision paid a Redis round trip for nothing, and a
connection of its own where the backend was made per thread. `AsyncResult.get()` still works:
it subscribes when it starts waiting, and reads a result already stored first.
"""

from typing import Any

from celery.backends.redis import RedisBackend as CeleryRedisBackend


class RedisBackend(CeleryRedisBackend):
    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Subscribe to nothing when a task is sent (see the module's docstring)."""
