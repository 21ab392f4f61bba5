"""examples/http_agent.py runs as a process of its own and answers the HTTP agent protocol."""

import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import requests

from execution.agents.base import Fail, Finish, ToolCall
from execution.agents.http import HttpAgent
from scripts.processes import ROOT


@pytest.fixture(scope="module")
def example_url() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "http_agent.py"), "0"], stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline() if process.stdout else ""))
    reader.start()
    reader.join(30)
    try:
        assert lines, "the example printed nothing"
        assert lines[0].startswith("listening on "), lines
        yield lines[0].removeprefix("listening on ").strip()
    finally:
        process.terminate()
        process.wait(10)


def context(tool_calls=()):
    return {
        "plan_id": "p",
        "plan_goal": "Write a greeting",
        "subtask_id": "s",
        "subtask_key": "greet",
        "description": "Say hello",
        "agent": "writer",
        "input": {"path": "hello.txt"},
        "attempt": 1,
        "dependencies": {},
        "tool_calls": list(tool_calls),
        "execution_mode": "subtask",
        "conversation": [],
        "usage": {},
    }


def decided(status, result=None, reason=""):
    arguments = {"path": "hello.txt", "content": "Say hello\n"}
    return {
        "tool": "write_file",
        "arguments": arguments,
        "requires_approval": True,
        "status": status,
        "result": result,
        "approved_arguments": arguments if status == "approved" else None,
        "reason": reason,
        "call_id": "",
    }


def test_the_example_asks_for_one_tool_call_needing_approval(example_url):
    step = HttpAgent("writer", url=example_url).run(context())
    assert step == ToolCall("write_file", {"path": "hello.txt", "content": "Say hello\n"}, True)


def test_the_example_finishes_with_the_approved_tools_result(example_url):
    step = HttpAgent("writer", url=example_url).run(context([decided("approved", result="12 bytes written")]))
    assert step == Finish({"written": "hello.txt", "tool_result": "12 bytes written"})


def test_the_example_fails_when_its_call_is_rejected(example_url):
    step = HttpAgent("writer", url=example_url).run(context([decided("rejected", reason="not here")]))
    assert isinstance(step, Fail)
    assert "not here" in step.error


def test_the_example_answers_plain_json_over_http(example_url):
    response = requests.post(example_url, json=context(), timeout=10)
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {
        "tool_call": {
            "tool": "write_file",
            "arguments": {"path": "hello.txt", "content": "Say hello\n"},
            "requires_approval": True,
        }
    }
    assert requests.post(example_url, data=b"[]", timeout=10).status_code == 400
