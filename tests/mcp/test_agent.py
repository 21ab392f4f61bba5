"""The openai agent with MCP servers, run in this process against the reference servers and the fake model."""

import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from execution.agents.base import Finish, ToolCalls
from execution.agents.definitions import agent_from_definition
from execution.agents.mcp_servers import McpUnreachable
from execution.models import McpListing
from scripts.servers import free_port
from tests.fakes.openai_server import completion, tool_call
from tests.mcp.servers import TOKEN, TOKEN_VARIABLE, agent_definitions, alive, command_line, descendants, guards_of
from tests.support.agent_contexts import approved, context, rejected, resumed
from tests.support.flows import wait_for

pytestmark = pytest.mark.django_db  # a listing is remembered for GET /agents/

OFFERED = [
    "time__get_current_time",
    "time__convert_time",
    "fs__read_text_file",
    "fs__write_file",
    "fs__list_directory",
    "git__git_status",
    "git__git_log",
    "everything__echo",
    "everything__get-structured-content",
    "everything__get-sum",
    "everything__trigger-long-running-operation",
]


def tool_messages(request):
    return {
        message["tool_call_id"]: message["content"]
        for message in request["body"]["messages"]
        if message["role"] == "tool"
    }


def time_servers():
    """Return the time servers this process runs (not their guards, nor those of the workers' pool processes)."""
    servers = [child for guard in guards_of(os.getpid()) for child in descendants(guard)]
    return [pid for pid in servers if "-m mcp_server_time" in command_line(pid)]


def test_the_first_model_call_offers_every_servers_tools_by_prefixed_name_with_their_description_and_schema(
    mcp_agent, fake_openai
):
    fake_openai.script(completion("Nothing to do."))

    step = mcp_agent.run(context())

    assert isinstance(step, Finish)
    functions = [tool["function"] for tool in fake_openai.requests()[0]["body"]["tools"]]
    assert sorted(function["name"] for function in functions) == sorted(OFFERED)
    write_file = next(function for function in functions if function["name"] == "fs__write_file")
    assert "write" in write_file["description"].lower()
    assert write_file["parameters"]["required"] == ["path", "content"]
    assert [entry["name"] for entry in step.state["mcp_tools"]] == [function["name"] for function in functions]
    listings = {listing.server: listing for listing in McpListing.objects.filter(agent="mcp")}
    assert sorted(listings) == ["everything", "fs", "git", "time"]
    assert [tool["tool"] for tool in listings["git"].tools] == ["git_status", "git_log"]


def test_calls_needing_no_approval_are_made_at_once_and_the_model_gets_the_servers_real_answers(
    mcp_agent, fake_openai, test_agents
):
    calls = [
        tool_call("time__get_current_time", {"timezone": "Europe/Paris"}, id="time"),
        tool_call("git__git_status", {"repo_path": str(test_agents.mcp.repository)}, id="git"),
        tool_call("fs__read_text_file", {"path": str(test_agents.mcp.workspace / "notes.txt")}, id="fs"),
        tool_call("everything__echo", {"message": "hello over HTTP"}, id="echo"),
        tool_call("everything__get-structured-content", {"location": "Chicago"}, id="weather"),
    ]
    fake_openai.script(completion(tool_calls=calls), completion("All read."))

    step = mcp_agent.run(context())

    assert isinstance(step, Finish)
    answers = tool_messages(fake_openai.requests()[1])
    assert json.loads(answers["time"])["timezone"] == "Europe/Paris"
    assert "On branch main" in answers["git"]
    assert "Remember the milk." in answers["fs"]
    assert answers["echo"] == "Echo: hello over HTTP"
    assert json.loads(answers["weather"]) == {"temperature": 36, "conditions": "Light rain / drizzle", "humidity": 82}


def test_a_call_needing_approval_is_made_only_once_approved_with_the_approved_arguments(
    mcp_agent, fake_openai, test_agents
):
    target = test_agents.mcp.workspace / "approved.txt"
    write = tool_call("fs__write_file", {"path": str(target), "content": "first draft"}, id="w1")
    fake_openai.script(completion(tool_calls=[write]), completion("Written."))
    first = context()

    step = mcp_agent.run(first)

    assert isinstance(step, ToolCalls)
    [call] = step.calls
    assert (call.tool, call.arguments["content"], call.requires_approval) == ("fs__write_file", "first draft", True)
    assert not target.exists()

    edited = {"path": str(target), "content": "the edited text"}
    final = mcp_agent.run(resumed(first, step, approved(arguments=edited)))

    assert isinstance(final, Finish)
    assert target.read_text() == "the edited text"
    answer = tool_messages(fake_openai.requests()[1])["w1"]
    assert answer.startswith("The approver edited the arguments to")
    assert "Successfully wrote" in answer


def test_a_rejected_call_is_never_made_and_the_model_is_told_why(mcp_agent, fake_openai, test_agents):
    target = test_agents.mcp.workspace / "rejected.txt"
    write = tool_call("fs__write_file", {"path": str(target), "content": "no"}, id="w1")
    fake_openai.script(completion(tool_calls=[write]), completion("Fine, I will not."))
    first = context()
    step = mcp_agent.run(first)

    mcp_agent.run(resumed(first, step, rejected("not that file")))

    assert not target.exists()
    answer = tool_messages(fake_openai.requests()[1])["w1"]
    assert "rejected" in answer
    assert "not that file" in answer


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        (tool_call("fs__write_file", {"path": "x.txt"}, id="c"), "'content' is a required property"),
        (tool_call("fs__move_file", {"source": "a", "destination": "b"}, id="c"), "there is no tool 'fs__move_file'"),
        (tool_call("time__get_current_time", {"timezone": "Nowhere/Atlantis"}, id="c"), "Invalid timezone"),
        (tool_call("everything__get-sum", {"a": 1}, id="c"), "'b' is a required property"),
    ],
    ids=["schema", "not-listed", "is-error", "schema-over-http"],
)
def test_a_bad_call_is_answered_to_the_model_as_an_error_and_nobody_is_asked(mcp_agent, fake_openai, call, problem):
    fake_openai.script(completion(tool_calls=[call]), completion("I see."))

    step = mcp_agent.run(context())

    assert isinstance(step, Finish)
    answer = tool_messages(fake_openai.requests()[1])["c"]
    assert answer.startswith("Error:")
    assert problem in answer


def test_a_call_past_timeout_s_is_answered_timed_out_and_the_subtask_goes_on(mcp_agent, fake_openai):
    slow = tool_call("everything__trigger-long-running-operation", {"duration": 6, "steps": 2}, id="slow")
    echo = tool_call("everything__echo", {"message": "still here"}, id="echo")
    fake_openai.script(completion(tool_calls=[slow]), completion(tool_calls=[echo]), completion("Done."))

    step = mcp_agent.run(context())

    assert isinstance(step, Finish)
    requests = fake_openai.requests()
    assert tool_messages(requests[1])["slow"] == "Error: timed out after 3s (timeout_s)."
    assert tool_messages(requests[2])["echo"] == "Echo: still here"


def test_a_result_over_the_size_limit_is_cut_and_marked(mcp_agent, fake_openai, settings):
    settings.EXECUTION_MAX_RESULT_BYTES = 40
    fake_openai.script(completion(tool_calls=[tool_call("everything__echo", {"message": "é" * 50}, id="e")]))
    fake_openai.script(completion("Long."))

    mcp_agent.run(context())

    answer = tool_messages(fake_openai.requests()[1])["e"]
    assert answer.startswith("Echo: éé")
    assert answer.endswith("[truncated: the first 40 of 106 bytes (EXECUTION_MAX_RESULT_BYTES)]")


def test_a_resume_offers_the_tools_listed_at_the_first_call_even_when_the_definition_changed_since(
    mcp_agent, fake_openai, test_agents
):
    write = tool_call("fs__write_file", {"path": str(test_agents.mcp.workspace / "later.txt"), "content": "x"})
    fake_openai.script(completion(tool_calls=[write]), completion("Done."))
    first = context()
    step = mcp_agent.run(first)
    definition = agent_definitions(test_agents.mcp, fake_openai.agent_definition())["mcp"]
    definition["mcp_servers"] = [server for server in definition["mcp_servers"] if server["name"] == "fs"]
    restarted = agent_from_definition("mcp", definition)

    restarted.run(resumed(first, step, approved()))

    before, after = (request["body"]["tools"] for request in fake_openai.requests())
    assert after == before


def test_a_stdio_server_that_died_is_started_again_for_the_next_call(mcp_agent, fake_openai):
    fake_openai.script(completion(tool_calls=[tool_call("time__get_current_time", {"timezone": "UTC"})]))
    fake_openai.script(completion("ok"))
    mcp_agent.run(context())
    [server] = time_servers()
    os.kill(server, signal.SIGKILL)
    wait_for(lambda: not alive(server), timeout=5)
    fake_openai.reset()
    fake_openai.script(completion(tool_calls=[tool_call("time__get_current_time", {"timezone": "UTC"}, id="t")]))
    fake_openai.script(completion("ok again"))

    step = mcp_agent.run(context())

    assert isinstance(step, Finish)
    assert json.loads(tool_messages(fake_openai.requests()[1])["t"])["timezone"] == "UTC"
    [again] = time_servers()
    assert again != server


def test_a_server_that_cannot_be_started_or_reached_is_an_agent_error_naming_it(fake_openai, test_agents, mcp_token):
    base = fake_openai.agent_definition()
    missing = {"name": "gone", "command": "no-such-mcp-server"}
    down = {"name": "down", "url": f"http://127.0.0.1:{free_port()}/mcp", "headers": {"X-Key": f"env:{TOKEN_VARIABLE}"}}
    fake_openai.script(completion("never asked"))

    with pytest.raises(McpUnreachable, match=r"'gone' \(no-such-mcp-server\) could not be started.*cannot start"):
        agent_from_definition("a", {**base, "mcp_servers": [missing]}).run(context())
    with pytest.raises(McpUnreachable, match=r"'down' .* cannot be reached: .*ConnectError") as raised:
        agent_from_definition("b", {**base, "mcp_servers": [down]}).run(context())

    assert TOKEN not in str(raised.value)
    assert not fake_openai.requests()


def test_headers_are_read_from_the_environment_and_their_values_stay_out_of_errors(fake_openai, mcp_token):
    received = []

    class Refuses(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(dict(self.headers))
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/mcp"
    entry = {"name": "locked", "url": url, "headers": {"Authorization": f"env:{TOKEN_VARIABLE}"}}
    agent = agent_from_definition("locked", {**fake_openai.agent_definition(), "mcp_servers": [entry]})
    try:
        with pytest.raises(McpUnreachable) as raised:
            agent.run(context())
    finally:
        server.shutdown()

    assert received
    assert received[0]["Authorization"] == TOKEN
    assert "'locked'" in str(raised.value)
    assert TOKEN not in str(raised.value)
