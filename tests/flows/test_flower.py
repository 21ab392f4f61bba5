"""Flower shows the tasks workers run, although workers send no task events unless asked: it asks them."""

import time

import pytest
import requests
from celery import current_app

from execution.services import plan_submit
from scripts.processes import Worker
from scripts.servers import free_port
from tests.support.factories import UserFactory, plan_data, subtask
from tests.support.flows import finished

pytestmark = pytest.mark.usefixtures("engine")


def flower_task_names(url: str) -> set[str]:
    try:
        answer = requests.get(f"{url}/api/tasks", timeout=5)
    except requests.ConnectionError:
        return set()
    return {task["name"] for task in answer.json().values()} if answer.ok else set()


def test_flower_turns_on_the_task_events_it_shows(engine, tmp_path):
    port = free_port()
    env = {**engine.workers["control"].env, "FLOWER_UNAUTHENTICATED_API": "true"}
    flower = Worker("flower", ["flower", "--address=127.0.0.1", f"--port={port}"], env, tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        # Flower asks the workers for events every few seconds: plans run after that show up.
        while "execution.run_subtask" not in flower_task_names(url):
            assert flower.process.poll() is None, flower.tail()
            assert time.monotonic() < deadline, f"Flower showed no run:\n{flower.tail()}"
            plan = plan_submit(owner=UserFactory(), data=plan_data(subtask("a"), requires_approval=False))
            finished(plan)
            time.sleep(1)
    finally:
        flower.stop()
        current_app.control.disable_events()  # back to the workers' default for the other tests
