"""Live event stream latency: from an event's commit to its arrival at an SSE client (uvicorn)."""

import os
import queue
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from django.db import transaction
from rest_framework.authtoken.models import Token

from execution.engine import plan_lock
from execution.events import event_append
from execution.services import plan_submit
from tests.factories import UserFactory, plan_data, subtask
from tests.processes import FAST, WebServer, current_database_url

SAMPLES = 100


def run() -> dict[str, float]:
    print(f"event stream: commit -> SSE client, {SAMPLES} events, uvicorn on this machine")
    owner = UserFactory(username=f"stream-{time.time_ns()}")
    token = Token.objects.create(user=owner).key
    plan = plan_submit(owner=owner, data=plan_data(subtask("a")))
    env = {**os.environ, **FAST, "DATABASE_URL": current_database_url()}
    server = WebServer(env, Path(tempfile.mkdtemp(prefix="bench-web-")))
    arrivals: queue.Queue[tuple[int, float]] = queue.Queue()
    try:
        server.wait_ready()
        last = plan.events.order_by("-seq").values_list("seq", flat=True).first()

        def listen() -> None:
            headers = {"Authorization": f"Token {token}", "Accept": "text/event-stream"}
            url = f"{server.url}/api/v1/plans/{plan.pk}/events/?after={last}"
            try:
                with httpx.stream("GET", url, headers=headers, timeout=None) as response:
                    for line in response.iter_lines():
                        if line.startswith("id: "):
                            arrivals.put((int(line[4:]), time.perf_counter()))
            except httpx.HTTPError:
                pass  # the server stops when the measurement is over

        threading.Thread(target=listen, daemon=True).start()
        time.sleep(1.0)
        latencies = []
        for i in range(SAMPLES):
            with transaction.atomic():
                plan_lock(plan.pk)  # events are numbered under the plan's lock
                seq = event_append(plan_id=plan.pk, type="benchmark.ping", payload={"i": i})
            committed = time.perf_counter()
            arrived_seq, arrived = arrivals.get(timeout=10)
            assert arrived_seq == seq
            latencies.append((arrived - committed) * 1000)
            time.sleep(0.02)
    finally:
        server.stop()
    latencies.sort()
    figures = {
        "p50": statistics.median(latencies),
        "p95": latencies[int(len(latencies) * 0.95) - 1],
        "max": latencies[-1],
    }
    print(
        "  latency: "
        + ", ".join(f"{name} {value:5.1f} ms" for name, value in figures.items())
        + "  (goal: under 100 ms)"
    )
    return figures
