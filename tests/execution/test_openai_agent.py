"""The openai agent's conversations, with the real openai client against the fake server: tool calls and decisions."""

import json

import pytest

from execution.agents.base import Fail, Finish, ToolCalls
from execution.agents.definitions import agent_from_definition
from tests.fakes.openai_server import completion, tool_call
from tests.support.agent_contexts import (
    LOGIN,
    TOOLS,
    WRITE_FILE,
    approved,
    context,
    last_messages,
    rejected,
    resumed,
    stored,
)


@pytest.fixture
def coder(fake_openai):
    return agent_from_definition("coder", fake_openai.agent_definition(tools=TOOLS))


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
    assert (body["stream"], body["stream_options"]) == (True, {"include_usage": True})
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


def test_a_worker_tool_shows_the_model_its_given_parameters_and_checks_the_arguments_against_its_own(
    fake_openai, settings, tmp_path
):
    settings.EXECUTION_WORKSPACE_DIR = str(tmp_path)
    (tmp_path / "notes.txt").write_text("milk")
    given = {"type": "object", "properties": {"path": {"type": "string"}, "why": {"type": "string"}}}
    read_file = {"name": "read_file", "runs": "worker", "requires_approval": False, "parameters": given}
    agent = agent_from_definition("ask", fake_openai.agent_definition(tools=[read_file]))
    fake_openai.script(
        completion(tool_calls=[tool_call("read_file", {"path": "notes.txt", "why": "curious"}, id="r1")]),
        completion(tool_calls=[tool_call("read_file", {"path": "notes.txt"}, id="r2")]),
        completion("It says milk."),
    )

    step = agent.run(context())

    assert isinstance(step, Finish)
    first, second, third = fake_openai.requests()
    assert first["body"]["tools"][0]["function"]["parameters"] == given
    [refused] = last_messages(second, 1)
    assert refused["content"].startswith("Error:")
    assert "'why' was unexpected" in refused["content"]
    assert last_messages(third, 1)[0]["content"] == "milk"


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


def test_a_call_without_a_decision_fails_rather_than_guessing(coder, fake_openai):
    fake_openai.script(completion(tool_calls=[tool_call("run_command", {"command": "make"}, id="c9")]))
    first = context()
    step = coder.run(first)
    step = coder.run({**first, "conversation": stored(step.conversation), "usage": stored(step.usage)})
    assert isinstance(step, Fail)
    assert "c9" in step.error
    assert len(fake_openai.requests()) == 1


def test_any_object_is_a_valid_input(coder):
    assert coder.validate_input({"anything": [1, 2], "sleep_ms": 3}) == []
