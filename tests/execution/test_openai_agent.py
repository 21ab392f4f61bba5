"""The openai agent, with the real openai client, against the fake OpenAI-compatible server.

Each test plays the engine by hand: it builds the context a run gets, stores what a step
returns (through JSON, as the jsonb column does) and decides the tool calls it asked for.
"""

import json
import logging
import socket

import pytest

from execution.agents.base import AgentError, Fail, Finish, ToolCalls
from execution.agents.definitions import agent_from_definition
from tests.fakes.openai_server import completion, reply, tool_call

WRITE_FILE = {
    "name": "write_file",
    "description": "Write a file of the project.",
    "parameters": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"],
        "additionalProperties": False,
    },
}
RUN_COMMAND = {
    "name": "run_command",
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
}
READ_FILE = {"name": "read_file", "runs": "worker", "requires_approval": False}
TOOLS = [WRITE_FILE, RUN_COMMAND, READ_FILE]
LOGIN = {"path": "lib/login.dart", "content": "class Login {}"}


@pytest.fixture
def coder(fake_openai):
    return agent_from_definition("coder", fake_openai.agent_definition(tools=TOOLS))


def context(**extra):
    return {
        "plan_id": "plan-1",
        "plan_goal": "Build a to-do app",
        "plan_metadata": {},
        "session_id": "",
        "subtask_id": "subtask-1",
        "subtask_key": "login",
        "description": "Write the login screen",
        "agent": "coder",
        "input": {"framework": "flutter"},
        "attempt": 1,
        "dependencies": {"init": {"description": "Create the project", "result": "todo_app created", "agent": "coder"}},
        "tool_calls": [],
        "execution_mode": "subtask",
        "conversation": [],
        "usage": {},
        **extra,
    }


def stored(value):
    """Return a value as it comes back from a PostgreSQL jsonb column."""
    return json.loads(json.dumps(value))


def approved(result=None, arguments=None):
    return {"status": "approved", "result": result, "approved_arguments": arguments, "reason": ""}


def rejected(reason):
    return {"status": "rejected", "result": None, "approved_arguments": None, "reason": reason}


def resumed(previous, step, *decisions):
    """Return the next run's context: the step's state stored and each of its calls decided."""
    calls = list(previous["tool_calls"])
    for call, decision in zip(step.calls, decisions, strict=True):
        calls.append(
            {
                "tool": call.tool,
                "arguments": call.arguments,
                "requires_approval": True,
                **decision,
                "approved_arguments": (decision["approved_arguments"] or call.arguments)
                if decision["status"] == "approved"
                else None,
                "decided_by": "alice",
                "decided_at": "2025-01-01T00:00:00+00:00",
                "approval_id": f"approval-{call.call_id}",
                "call_id": call.call_id,
            }
        )
    return {
        **previous,
        "attempt": previous["attempt"] + 1,
        "tool_calls": stored(calls),
        "conversation": stored(step.conversation),
        "usage": stored(step.usage),
    }


def last_messages(request, count):
    return request["body"]["messages"][-count:]


def test_the_first_call_asks_for_the_models_tool_call_with_its_id(coder, fake_openai):
    fake_openai.script(completion(tool_calls=[tool_call("write_file", LOGIN, id="call_w1")]))

    step = coder.run(context())

    assert isinstance(step, ToolCalls)
    [call] = step.calls
    assert (call.tool, call.arguments, call.call_id, call.requires_approval) == ("write_file", LOGIN, "call_w1", True)
    assert [message["role"] for message in step.conversation] == ["user", "assistant"]
    assert step.conversation[1]["tool_calls"][0]["id"] == "call_w1"
    assert step.usage == {
        "prompt_tokens": 11,
        "completion_tokens": 7,
        "steps": [{"prompt_tokens": 11, "completion_tokens": 7, "model": "fake-model"}],
    }


def test_the_first_user_message_holds_the_goal_the_task_its_input_and_the_dependencies_results(coder, fake_openai):
    fake_openai.script(completion("Done"))
    coder.run(context())

    [request] = fake_openai.requests()
    body = request["body"]
    assert body["model"] == "fake-model"
    assert not body.get("stream")
    [message] = body["messages"]
    assert message["role"] == "user"
    for text in ("Build a to-do app", "Write the login screen", '"framework": "flutter"', "init", "todo_app created"):
        assert text in message["content"]
    assert [tool["function"]["name"] for tool in body["tools"]] == ["write_file", "run_command", "read_file"]
    assert body["tools"][0] == {"type": "function", "function": WRITE_FILE}
    assert body["tools"][2]["function"]["parameters"]["required"] == ["path"]


def test_the_system_prompt_comes_first_and_the_temperature_is_sent(fake_openai):
    agent = agent_from_definition("ask", fake_openai.agent_definition(system_prompt="Answer briefly.", temperature=0.3))
    fake_openai.script(completion("Yes"))
    agent.run(context())

    body = fake_openai.requests()[0]["body"]
    assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert body["messages"][1]["role"] == "user"
    assert body["temperature"] == 0.3
    assert "tools" not in body


def test_an_approved_result_reaches_the_model_and_its_answer_finishes_the_subtask(coder, fake_openai):
    fake_openai.script(
        completion(tool_calls=[tool_call("write_file", LOGIN, id="call_w1")]),
        completion("The login screen is written.", prompt_tokens=30, completion_tokens=9),
    )
    first = context()
    step = coder.run(first)

    final = coder.run(resumed(first, step, approved(result="wrote 14 bytes")))

    request = fake_openai.requests()[1]
    assert [message["role"] for message in request["body"]["messages"]] == ["user", "assistant", "tool"]
    assert last_messages(request, 1) == [{"role": "tool", "tool_call_id": "call_w1", "content": "wrote 14 bytes"}]
    assert isinstance(final, Finish)
    assert final.result == {
        "content": "The login screen is written.",
        "model": "fake-model",
        "steps": 2,
        "usage": {"prompt_tokens": 41, "completion_tokens": 16},
    }
    assert [message["role"] for message in final.conversation] == ["user", "assistant", "tool", "assistant"]
    assert final.usage["prompt_tokens"] == 41
    assert len(final.usage["steps"]) == 2


def test_a_result_that_is_not_text_is_sent_as_json(coder, fake_openai):
    fake_openai.script(completion(tool_calls=[tool_call("run_command", {"command": "ls"}, id="c1")]), completion("ok"))
    first = context()
    step = coder.run(first)
    coder.run(resumed(first, step, approved(result={"exit": 0, "stdout": "lib\n"})))

    [message] = last_messages(fake_openai.requests()[1], 1)
    assert json.loads(message["content"]) == {"exit": 0, "stdout": "lib\n"}


def test_edited_arguments_are_told_to_the_model_with_the_result(coder, fake_openai):
    fake_openai.script(completion(tool_calls=[tool_call("run_command", {"command": "rm -rf build"})]), completion("ok"))
    first = context()
    step = coder.run(first)
    coder.run(resumed(first, step, approved(result="removed", arguments={"command": "rm -rf build/cache"})))

    [message] = last_messages(fake_openai.requests()[1], 1)
    assert message["content"] == (
        'The approver edited the arguments to {"command": "rm -rf build/cache"}. Result: removed'
    )


def test_a_rejection_reaches_the_model_with_its_reason_and_the_model_decides_what_follows(coder, fake_openai):
    fake_openai.script(
        completion(tool_calls=[tool_call("run_command", {"command": "rm -rf /"}, id="call_rm")]),
        completion("Understood, I will not delete anything."),
    )
    first = context()
    step = coder.run(first)

    final = coder.run(resumed(first, step, rejected("never delete the disk")))

    [message] = last_messages(fake_openai.requests()[1], 1)
    assert message["tool_call_id"] == "call_rm"
    assert "rejected" in message["content"]
    assert "never delete the disk" in message["content"]
    assert final.result["content"] == "Understood, I will not delete anything."


def test_an_expired_approval_is_a_rejection_saying_so(coder, fake_openai):
    fake_openai.script(completion(tool_calls=[tool_call("run_command", {"command": "make"})]), completion("ok"))
    first = context()
    step = coder.run(first)
    coder.run(resumed(first, step, rejected("expired")))

    [message] = last_messages(fake_openai.requests()[1], 1)
    assert "rejected" in message["content"]
    assert "expired" in message["content"]


def test_two_calls_in_one_answer_wait_for_both_decisions_then_the_model_is_called_once_with_both(coder, fake_openai):
    fake_openai.script(
        completion(
            tool_calls=[
                tool_call("write_file", LOGIN, id="call_a"),
                tool_call("run_command", {"command": "flutter test"}, id="call_b"),
            ]
        ),
        completion("Both done."),
    )
    first = context()
    step = coder.run(first)
    assert isinstance(step, ToolCalls)
    assert [(call.tool, call.call_id) for call in step.calls] == [("write_file", "call_a"), ("run_command", "call_b")]

    final = coder.run(resumed(first, step, approved(result="written"), rejected("not now")))

    requests = fake_openai.requests()
    assert len(requests) == 2
    tool_messages = last_messages(requests[1], 2)
    assert [(message["tool_call_id"], message["role"]) for message in tool_messages] == [
        ("call_a", "tool"),
        ("call_b", "tool"),
    ]
    assert tool_messages[0]["content"] == "written"
    assert "rejected" in tool_messages[1]["content"]
    assert isinstance(final, Finish)


def test_read_file_runs_on_the_worker_without_approval_inside_the_workspace(coder, fake_openai, settings, tmp_path):
    settings.EXECUTION_WORKSPACE_DIR = str(tmp_path)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "main.dart").write_text("void main() {}")
    fake_openai.script(
        completion(tool_calls=[tool_call("read_file", {"path": "lib/main.dart"}, id="r1")]), completion("It is empty.")
    )

    step = coder.run(context())

    assert isinstance(step, Finish)
    [message] = last_messages(fake_openai.requests()[1], 1)
    assert message == {"role": "tool", "tool_call_id": "r1", "content": "void main() {}"}
    assert step.result["steps"] == 2


@pytest.mark.parametrize("path", ["../secret.txt", "/etc/passwd", "link/secret.txt"])
def test_read_file_refuses_paths_outside_the_workspace(coder, fake_openai, settings, tmp_path, path):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (tmp_path / "secret.txt").write_text("the secret")
    (workspace / "link").symlink_to(tmp_path)
    settings.EXECUTION_WORKSPACE_DIR = str(workspace)
    fake_openai.script(completion(tool_calls=[tool_call("read_file", {"path": path})]), completion("I cannot."))

    step = coder.run(context())

    [message] = last_messages(fake_openai.requests()[1], 1)
    assert message["content"].startswith("Error:")
    assert "the secret" not in message["content"]
    assert isinstance(step, Finish)


def test_a_worker_call_is_answered_at_once_while_a_client_call_waits_and_the_answers_keep_the_calls_order(
    coder, fake_openai, settings, tmp_path
):
    settings.EXECUTION_WORKSPACE_DIR = str(tmp_path)
    (tmp_path / "pubspec.yaml").write_text("name: todo_app")
    fake_openai.script(
        completion(
            tool_calls=[
                tool_call("write_file", LOGIN, id="w"),
                tool_call("read_file", {"path": "pubspec.yaml"}, id="r"),
            ]
        ),
        completion("ok"),
    )
    first = context()
    step = coder.run(first)
    assert [call.call_id for call in step.calls] == ["w"]
    assert step.conversation[-1] == {"role": "tool", "tool_call_id": "r", "content": "name: todo_app"}

    coder.run(resumed(first, step, approved(result="written")))

    assert [message["tool_call_id"] for message in last_messages(fake_openai.requests()[1], 2)] == ["w", "r"]


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        (tool_call("write_file", '{"path": "a.txt", "content": '), "not valid JSON"),
        (tool_call("write_file", {"path": "a.txt"}), "'content' is a required property"),
        (tool_call("write_file", "[1, 2]"), "must be a JSON object"),
        (tool_call("delete_everything", {}), "no tool 'delete_everything'"),
    ],
    ids=["not-json", "schema", "not-an-object", "unknown-tool"],
)
def test_bad_arguments_are_answered_to_the_model_as_a_tool_error_it_can_correct(coder, fake_openai, call, problem):
    fake_openai.script(
        completion(tool_calls=[call]), completion(tool_calls=[tool_call("write_file", LOGIN, id="fixed")])
    )

    step = coder.run(context())

    [message] = last_messages(fake_openai.requests()[1], 1)
    assert message["role"] == "tool"
    assert message["tool_call_id"] == call["id"]
    assert message["content"].startswith("Error:")
    assert problem in message["content"]
    assert isinstance(step, ToolCalls)
    assert [(c.call_id, c.arguments) for c in step.calls] == [("fixed", LOGIN)]


def test_a_429_is_an_agent_error_carrying_retry_after(coder, fake_openai):
    fake_openai.script(reply({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "7"}))
    with pytest.raises(AgentError, match="429") as raised:
        coder.run(context())
    assert raised.value.retry_after == 7.0


def test_a_server_error_is_an_agent_error(coder, fake_openai):
    fake_openai.script(reply({"error": {"message": "model crashed"}}, status=500))
    with pytest.raises(AgentError, match="500"):
        coder.run(context())


def test_a_timeout_is_an_agent_error(fake_openai):
    agent = agent_from_definition("slow", fake_openai.agent_definition(timeout_s=0.5))
    fake_openai.script(reply(completion("late"), delay_s=3))
    with pytest.raises(AgentError, match="timed out"):
        agent.run(context())


def test_an_unreachable_server_is_an_agent_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    agent = agent_from_definition("gone", {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m"})
    with pytest.raises(AgentError, match="failed"):
        agent.run(context())


def test_a_client_error_fails_the_subtask_with_the_status_and_the_body(coder, fake_openai):
    fake_openai.script(reply({"error": {"message": "model 'fake-model' not found"}}, status=404))
    step = coder.run(context())
    assert isinstance(step, Fail)
    assert "404" in step.error
    assert "not found" in step.error


@pytest.mark.parametrize("body", [{"hello": "world"}, "<html>a proxy page</html>", {"choices": []}])
def test_an_answer_that_is_not_a_chat_completion_fails_the_subtask(coder, fake_openai, body):
    fake_openai.script(reply(body))
    step = coder.run(context())
    assert isinstance(step, Fail)
    assert "not a chat completion" in step.error


def test_more_than_max_steps_model_calls_fail_the_subtask(fake_openai, settings, tmp_path):
    settings.EXECUTION_WORKSPACE_DIR = str(tmp_path)
    agent = agent_from_definition("loop", fake_openai.agent_definition(tools=[READ_FILE], max_steps=3))
    fake_openai.script(*[completion(tool_calls=[tool_call("read_file", {"path": "x"})]) for _ in range(5)])

    step = agent.run(context())

    assert isinstance(step, Fail)
    assert "max_steps=3" in step.error
    assert len(fake_openai.requests()) == 3
    assert len(step.usage["steps"]) == 3


def test_a_call_without_a_decision_fails_rather_than_guessing(coder, fake_openai):
    fake_openai.script(completion(tool_calls=[tool_call("run_command", {"command": "make"}, id="c9")]))
    first = context()
    step = coder.run(first)
    step = coder.run({**first, "conversation": stored(step.conversation), "usage": stored(step.usage)})
    assert isinstance(step, Fail)
    assert "c9" in step.error
    assert len(fake_openai.requests()) == 1


def test_the_api_key_goes_into_the_request_and_nowhere_else(fake_openai, monkeypatch):
    key = "sk-test-0123456789abcdef"
    monkeypatch.setenv("FAKE_OPENAI_KEY", key)
    agent = agent_from_definition("hosted", fake_openai.agent_definition(api_key_env="FAKE_OPENAI_KEY", tools=TOOLS))
    fake_openai.script(
        completion(tool_calls=[tool_call("run_command", {"command": "ls"})]),
        reply({"error": {"message": f"Incorrect API key provided: {key}"}}, status=401),
        reply({"error": {"message": f"overloaded ({key})"}}, status=503),
    )
    first = context()
    step = agent.run(first)
    failed = agent.run(resumed(first, step, approved(result="lib")))
    with pytest.raises(AgentError) as raised:
        agent.run(first)

    assert fake_openai.requests()[0]["headers"]["authorization"] == f"Bearer {key}"
    assert isinstance(failed, Fail)
    assert "401" in failed.error
    for text in (failed.error, str(raised.value), json.dumps(failed.conversation), json.dumps(failed.usage)):
        assert key not in text
    assert key not in agent.description
    assert key not in repr(agent)
    assert key not in repr(vars(agent))


def test_the_api_key_stays_out_of_the_logs_even_at_debug_level(fake_openai, monkeypatch, caplog):
    key = "sk-test-logged-nowhere"
    monkeypatch.setenv("FAKE_OPENAI_KEY", key)
    agent = agent_from_definition("hosted", fake_openai.agent_definition(api_key_env="FAKE_OPENAI_KEY"))
    fake_openai.script(completion("hi"), reply({"error": {"message": "down"}}, status=502))
    caplog.set_level(logging.DEBUG)

    agent.run(context())
    with pytest.raises(AgentError):
        agent.run(context())

    assert "chat/completions" in caplog.text
    assert key not in caplog.text


def test_a_missing_api_key_fails_naming_the_variable(fake_openai, monkeypatch):
    monkeypatch.delenv("FAKE_OPENAI_KEY", raising=False)
    agent = agent_from_definition("hosted", fake_openai.agent_definition(api_key_env="FAKE_OPENAI_KEY"))
    step = agent.run(context())
    assert isinstance(step, Fail)
    assert "FAKE_OPENAI_KEY" in step.error
    assert fake_openai.requests() == []


def test_local_servers_get_a_placeholder_key_never_openai_api_key(fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-hosted-key-for-another-service")
    agent = agent_from_definition("local", fake_openai.agent_definition())
    fake_openai.script(completion("hi"))
    agent.run(context())
    assert "sk-hosted" not in fake_openai.requests()[0]["headers"]["authorization"]


def test_parallel_subtasks_get_their_own_scripted_answers(fake_openai):
    agent = agent_from_definition("ask", fake_openai.agent_definition())
    fake_openai.script(completion("about login"), match="Explain the login screen")
    fake_openai.script(completion("about tests"), match="Explain the tests")

    tests_step = agent.run(context(description="Explain the tests"))
    login_step = agent.run(context(description="Explain the login screen"))

    assert (login_step.result["content"], tests_step.result["content"]) == ("about login", "about tests")
    assert [request["match"] for request in fake_openai.requests()] == ["Explain the tests", "Explain the login screen"]


def test_a_script_may_be_chosen_by_the_model_name(fake_openai):
    fake_openai.script(completion("from the big model", model="big-model"), match="big-model")
    fake_openai.script(completion("from anyone"))
    big = agent_from_definition("big", fake_openai.agent_definition(model="big-model"))
    small = agent_from_definition("small", fake_openai.agent_definition())

    assert small.run(context()).result["content"] == "from anyone"
    assert big.run(context()).result == {
        "content": "from the big model",
        "model": "big-model",
        "steps": 1,
        "usage": {"prompt_tokens": 11, "completion_tokens": 7},
    }


def test_any_object_is_a_valid_input(coder):
    assert coder.validate_input({"anything": [1, 2], "sleep_ms": 3}) == []
