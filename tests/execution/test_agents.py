"""Agents: the script agent's semantics, the http and python agents, and the registry."""

import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from execution.agents.base import AgentError, Fail, Finish, ToolCall, ToolCalls, retry_after_seconds, step_from_json
from execution.agents.http import HttpAgent
from execution.agents.python import PythonAgent
from execution.agents.registry import agent_get, agent_input_errors, agent_names, agents_describe
from execution.agents.script import ScriptAgent
from tests.support.http import QuietHandler, local_server


def context(script=None, attempt=1, tool_calls=(), **extra):
    return {
        "plan_id": "p",
        "subtask_id": "s",
        "subtask_key": "build",
        "input": script or {},
        "attempt": attempt,
        "tool_calls": list(tool_calls),
        "dependencies": {},
        **extra,
    }


def decided(status, result=None, reason=""):
    return {
        "tool": "t",
        "arguments": {},
        "requires_approval": True,
        "status": status,
        "result": result,
        "reason": reason,
    }


agent = ScriptAgent("script")


def test_script_default_result_is_a_short_text():
    assert agent.run(context()) == Finish("build: done")


def test_script_result_is_any_json():
    assert agent.run(context({"result": {"files": [1, 2]}})) == Finish({"files": [1, 2]})


def test_script_fails_on_the_first_n_attempts():
    with pytest.raises(AgentError, match="attempt 2"):
        agent.run(context({"fail_times": 2}, attempt=2))
    assert agent.run(context({"fail_times": 2}, attempt=3)) == Finish("build: done")


def test_script_asks_for_tool_calls_one_after_another():
    script = {"tool_calls": [{"tool": "read", "arguments": {"p": 1}}, {"tool": "write", "requires_approval": False}]}
    assert agent.run(context(script)) == ToolCall("read", {"p": 1}, True)
    assert agent.run(context(script, tool_calls=[decided("approved", "r1")])) == ToolCall("write", {}, False)


def test_script_result_carries_the_tool_results_in_order():
    script = {"result": "ok", "tool_calls": [{"tool": "a"}, {"tool": "b"}]}
    step = agent.run(context(script, tool_calls=[decided("approved", "r1"), decided("approved", {"x": 2})]))
    assert step == Finish({"result": "ok", "tool_results": ["r1", {"x": 2}]})


def test_script_fails_with_the_rejection_reason():
    step = agent.run(context({"tool_calls": [{"tool": "rm"}]}, tool_calls=[decided("rejected", reason="no way")]))
    assert isinstance(step, Fail)
    assert "no way" in step.error


def test_script_echo_returns_the_context():
    ctx = context({"echo": True}, dependencies={"a": {"description": "d", "result": 1, "agent": "script"}})
    assert agent.run(ctx) == Finish(ctx)


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        ({"sleep_ms": -1}, "sleep_ms"),
        ({"fail_times": "2"}, "fail_times"),
        ({"tool_calls": {}}, "tool_calls"),
        ({"tool_calls": [{"arguments": {}}]}, "tool name"),
        ({"tool_calls": [{"tool": "t", "arguments": []}]}, "arguments"),
        ({"echo": 1}, "echo"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_script_rejects_bad_input(script, problem):
    errors = agent.validate_input(script)
    assert any(problem in error for error in errors), errors


@pytest.mark.parametrize(
    ("data", "step"),
    [
        ({"result": [1]}, Finish([1])),
        ({"error": "boom"}, Fail("boom")),
        ({"tool_call": {"tool": "t", "arguments": {"a": 1}}}, ToolCall("t", {"a": 1}, True)),
        ({"tool_call": {"tool": "t", "requires_approval": False}}, ToolCall("t", {}, False)),
    ],
)
def test_steps_read_from_json(data, step):
    assert step_from_json(data) == step


@pytest.mark.parametrize(
    "data", [[], {}, {"result": 1, "error": "x"}, {"tool_call": {}}, {"tool_call": {"tool": "t", "arguments": 1}}]
)
def test_malformed_steps_are_agent_errors(data):
    with pytest.raises(AgentError):
        step_from_json(data)


@pytest.fixture
def http_endpoint():
    """A local HTTP endpoint answering each POST with the next queued (status, body)."""
    answers: list[tuple] = []  # (status, body[, headers[, delay_s]])
    received: list[dict] = []

    class Handler(QuietHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            answer = answers.pop(0)
            status, body, headers, delay_s = (*answer, *((None, None, {}, 0)[len(answer) :]))
            time.sleep(delay_s)
            payload = json.dumps(body).encode() if not isinstance(body, bytes) else body
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(payload)

    with local_server(Handler) as server:
        yield f"http://127.0.0.1:{server.server_port}/step", answers, received


def test_http_agent_posts_the_context_and_reads_the_step(http_endpoint):
    url, answers, received = http_endpoint
    answers.extend([(200, {"tool_call": {"tool": "deploy"}}), (200, {"result": "shipped"})])
    http = HttpAgent("http", url=url)
    assert http.run(context({"x": 1})) == ToolCall("deploy", {}, True)
    assert http.run(context()) == Finish("shipped")
    assert received[0]["input"] == {"x": 1}


def test_http_agent_retries_server_errors_and_fails_on_client_errors(http_endpoint):
    url, answers, _ = http_endpoint
    answers.extend([(503, {"detail": "busy"}), (422, {"detail": "bad"})])
    http = HttpAgent("http", url=url)
    with pytest.raises(AgentError, match="503"):
        http.run(context())
    step = http.run(context())
    assert isinstance(step, Fail)
    assert "422" in step.error


def test_http_agent_passes_a_429s_retry_after_on(http_endpoint):
    url, answers, _ = http_endpoint
    answers.append((429, {"detail": "slow down"}, {"Retry-After": "12"}))
    with pytest.raises(AgentError, match="429") as raised:
        HttpAgent("http", url=url).run(context())
    assert raised.value.retry_after == 12.0


@pytest.mark.parametrize("body", [b"not json", {"answer": 42}, {"result": 1, "error": "both"}, {"tool_call": {}}])
def test_http_agent_fails_the_subtask_on_an_answer_that_is_not_a_step(http_endpoint, body):
    url, answers, _ = http_endpoint
    answers.append((200, body))
    step = HttpAgent("http", url=url).run(context())
    assert isinstance(step, Fail)
    assert "not a step" in step.error


def test_http_agent_retries_a_timeout(http_endpoint):
    url, answers, _ = http_endpoint
    answers.append((200, {"result": "late"}, {}, 2))
    with pytest.raises(AgentError, match="timed out"):
        HttpAgent("http", url=url, timeout_s=0.3).run(context())


@pytest.mark.parametrize(
    ("value", "seconds"), [("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("inf", None), ("soon", None), (None, None)]
)
def test_retry_after_is_read_as_seconds(value, seconds):
    assert retry_after_seconds(value) == seconds


def test_retry_after_may_be_an_http_date():
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 55 <= retry_after_seconds(in_a_minute) <= 60


def test_http_agent_without_a_url_fails():
    assert isinstance(HttpAgent("http", url="").run(context()), Fail)


def test_python_agent_calls_an_allowed_callable(settings):
    settings.EXECUTION_PYTHON_AGENT_MODULES = ["tests.support.agents:*"]
    python = PythonAgent("python")
    ctx = context({"callable": "tests.support.agents.dependency_keys"}, dependencies={"b": {}, "a": {}})
    assert python.validate_input(ctx["input"]) == []
    assert python.run(ctx) == Finish(["a", "b"])


def test_python_agent_refuses_modules_not_listed(settings):
    settings.EXECUTION_PYTHON_AGENT_MODULES = ["tests.support.agents:*"]
    python = PythonAgent("python")
    assert python.validate_input({"callable": "os.system"})
    assert python.validate_input({"callable": "tests.support.agents.nothing_here"})
    assert python.validate_input({})
    assert isinstance(python.run(context({"callable": "os.system"})), Fail)


def test_python_agent_with_a_configured_callable_needs_no_input(settings):
    settings.EXECUTION_PYTHON_AGENT_MODULES = []
    python = PythonAgent("keys", callable="tests.support.agents.dependency_keys")
    assert python.validate_input({}) == []
    assert python.run(context(dependencies={"z": {}})) == Finish(["z"])


def test_registry_has_the_builtins_and_the_seed_aliases():
    assert {"script", "http", "python", "coder", "debug", "ask"} <= set(agent_names())
    assert isinstance(agent_get("coder"), ScriptAgent)
    described = {entry["name"]: entry for entry in agents_describe()}
    assert described["http"]["implementation"] == "execution.agents.http.HttpAgent"
    assert agent_input_errors("nobody", {"anything": 1}) == []


def test_registry_follows_the_setting(settings):
    settings.EXECUTION_AGENTS = {"only": {"class": "execution.agents.script.ScriptAgent"}}
    assert agent_names() == ["only"]


def test_steps_carry_the_agents_state_only_by_keyword():
    step = Finish("done", conversation=[{"role": "user", "content": "hi"}], usage={"prompt_tokens": 1})
    assert (step.result, step.conversation, step.usage) == (
        "done",
        [{"role": "user", "content": "hi"}],
        {"prompt_tokens": 1},
    )
    assert Fail("no").conversation is None
    assert ToolCall("t").call_id == ""
    calls = ToolCalls((ToolCall("a", call_id="1"), ToolCall("b", call_id="2")), usage={})
    assert [call.tool for call in calls.calls] == ["a", "b"]
    with pytest.raises(TypeError):
        Finish("done", [])  # type: ignore[misc]


def test_python_agent_may_return_several_tool_calls(settings):
    settings.EXECUTION_PYTHON_AGENT_MODULES = ["tests.support.agents:*"]
    step = PythonAgent("python").run(context({"callable": "tests.support.agents.two_tool_calls"}))
    assert isinstance(step, ToolCalls)
