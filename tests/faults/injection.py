"""What the fault scenarios do to the stack: kill, freeze and restart workers; stop, restart and flush the servers."""

import json
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import httpx
import redis
from celery import current_app
from django.db import connections
from kombu.exceptions import OperationalError
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel
from rest_framework.authtoken.models import Token

from plans.models import Subtask
from scripts.processes import WebServer, Worker
from scripts.servers import PostgresServer, RedisServer
from tests.support.cluster import FAST, Cluster
from tests.support.flows import wait_for

TICK_S = float(FAST["EXECUTION_RECONCILE_INTERVAL_S"])


@dataclass
class Servers:
    postgres: PostgresServer
    redis: RedisServer


class Faults:
    """The cluster, its servers and its web process, with a method per fault a scenario injects."""

    def __init__(self, cluster: Cluster, servers: Servers, web: WebServer) -> None:
        self.cluster, self.servers, self.web = cluster, servers, web

    # --- workers ---------------------------------------------------------------------

    def kill_pool_process(self, subtask: Subtask) -> int:
        """SIGKILL the pool process running this subtask (as the OOM killer would); return its pid."""
        pid = int(subtask.worker.rsplit(":", 1)[1])
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_main_process(self, worker: Worker, *, orphans_timeout: float = 15) -> float | None:
        """SIGKILL a worker's main process; its pool processes, orphaned, are given time to go on their own.

        Return how long they took to go, or None if they had to be killed too.
        """
        killed = time.monotonic()
        os.kill(worker.pid, signal.SIGKILL)
        worker.process.wait()
        while _group_alive(worker.pid) and time.monotonic() < killed + orphans_timeout:
            time.sleep(0.1)
        if _group_alive(worker.pid):
            os.killpg(worker.pid, signal.SIGKILL)
            return None
        return round(time.monotonic() - killed, 1)

    def restart_worker(self, worker: Worker, timeout: float = 60) -> None:
        worker.restart()
        wait_for(
            lambda: current_app.control.ping(destination=[worker.hostname], timeout=0.5),
            timeout=timeout,
            message=f"{worker.name} to answer after its restart",
        )

    def stop_beat(self) -> None:
        """Freeze beat, then let its last tick expire: from now on no reconciler runs at all."""
        self.cluster["beat"].signal_group(signal.SIGSTOP)
        time.sleep(TICK_S + 0.3)

    def start_beat(self) -> None:
        self.cluster["beat"].signal_group(signal.SIGCONT)

    def stop_consuming(self, worker: Worker, queue: str) -> None:
        current_app.control.cancel_consumer(queue, destination=[worker.hostname], reply=True, timeout=5)

    def start_consuming(self, worker: Worker, queue: str) -> None:
        current_app.control.add_consumer(queue, destination=[worker.hostname], reply=True, timeout=5)

    # --- the broker ------------------------------------------------------------------

    def restart_redis(self) -> None:
        """Stop Redis and start it again on the same port: without persistence, every message is gone."""
        self.servers.redis.stop()
        self.servers.redis.start()
        # This process's pooled broker connection from before the restart fails its next
        # broadcast once, then reconnects: spend that failure here, not in a later step.
        for _ in range(3):
            try:
                current_app.control.ping(timeout=0.2)
                break
            except (redis.ConnectionError, OperationalError):
                continue

    def flush_redis(self) -> None:
        self.servers.redis.client.flushall()

    def messages_in(self, queue: str) -> list[dict[str, Any]]:
        """Return the messages waiting in a queue, decoded: each of its Redis lists (one per priority step)."""
        keys = [queue, *(f"{queue}{RedisChannel.sep}{step}" for step in PRIORITY_STEPS if step)]
        return [json.loads(raw) for key in keys for raw in self.servers.redis.client.lrange(key, 0, -1)]

    def purge(self, queue: str) -> int:
        with current_app.connection_for_write() as connection:
            return connection.default_channel.queue_purge(queue) or 0  # type: ignore[attr-defined]

    # --- the database ----------------------------------------------------------------

    def stop_postgres(self) -> None:
        """Stop PostgreSQL ("fast" shutdown: sessions are cut, open transactions roll back)."""
        self.servers.postgres.stop(signal.SIGINT)
        connections.close_all()

    def start_postgres(self) -> None:
        self.servers.postgres.start()
        connections.close_all()

    def health(self) -> httpx.Response:
        return httpx.get(f"{self.web.url}/health/", timeout=10)

    def healthy_again(self, timeout: float = 30, interval: float = 1.0) -> list[int]:
        """Poll the web's /health/ until it answers 200; return every status it answered (anonymous: throttled)."""
        statuses: list[int] = []
        deadline = time.monotonic() + timeout
        while not statuses or statuses[-1] != 200:
            assert time.monotonic() < deadline, f"/health/ answered {statuses} and never 200"
            if statuses:
                time.sleep(interval)
            statuses.append(self.health().status_code)
        return statuses

    def api(self, user) -> httpx.Client:
        """Return an HTTP client of the web process, signed in as `user` (a token)."""
        token, _ = Token.objects.get_or_create(user=user)
        return httpx.Client(base_url=f"{self.web.url}/api/v1", headers={"Authorization": f"Token {token.key}"})

    # --- between scenarios -----------------------------------------------------------

    def revive(self) -> None:
        """Bring back whatever a scenario left down: servers, frozen or dead workers, this process's connections."""
        if not self.servers.postgres.running:
            self.servers.postgres.start()
        if not self.servers.redis.running:
            self.servers.redis.start()
        connections.close_all()
        for worker in self.cluster.workers.values():
            if worker.process.poll() is not None:
                if _group_alive(worker.pid):
                    os.killpg(worker.pid, signal.SIGKILL)
                if worker.queues:
                    self.restart_worker(worker)
                else:
                    worker.restart()
            elif worker.name != "beat":
                worker.signal_group(signal.SIGCONT)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
