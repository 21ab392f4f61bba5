"""What people see of MCP tools: GET /agents/ with each server's last listing, MCP calls on the admin's pages."""

import json

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from execution.models import McpListing
from tests.desk.support import client_for, staff, waiting_tool_call
from tests.fakes.openai_server import completion
from tests.mcp.servers import TOKEN
from tests.support.agent_contexts import context
from tests.support.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def agents(settings, test_agents):
    settings.EXECUTION_AGENTS_FILE = str(test_agents.path)

    def get():
        client = APIClient()
        client.force_authenticate(UserFactory())
        response = client.get("/api/v1/agents/")
        assert response.status_code == 200
        return {agent["name"]: agent for agent in response.json()}

    return get


def test_agents_show_their_mcp_servers_and_the_tools_listed_last_never_a_headers_value(agents, mcp_agent, fake_openai):
    before = agents()
    servers = {server["name"]: server for server in before["mcp"]["mcp_servers"]}
    assert sorted(servers) == ["everything", "fs", "git", "time"]
    assert all(server["tools"] is None and server["listed_at"] is None for server in servers.values())
    assert servers["everything"]["headers"] == ["Authorization"]
    assert servers["fs"]["transport"] == "stdio"
    assert before["script"]["mcp_servers"] == []

    fake_openai.script(completion("Nothing to do."))
    mcp_agent.run(context())

    after = agents()
    fs = next(server for server in after["mcp"]["mcp_servers"] if server["name"] == "fs")
    assert fs["listed_at"] is not None
    tools = {tool["name"]: tool for tool in fs["tools"]}
    assert sorted(tools) == ["fs__list_directory", "fs__read_text_file", "fs__write_file"]
    assert (tools["fs__write_file"]["requires_approval"], tools["fs__read_text_file"]["requires_approval"]) == (
        True,
        False,
    )
    assert tools["fs__write_file"]["tool"] == "write_file"
    assert "content" in tools["fs__write_file"]["parameters"]["properties"]
    assert TOKEN not in json.dumps(after)


def test_a_listing_made_under_another_definition_of_the_server_is_not_shown(agents):
    McpListing.objects.create(
        agent="mcp", server="time", fingerprint="another", tools=[{"name": "time__old"}], listed_at=timezone.now()
    )
    time = next(server for server in agents()["mcp"]["mcp_servers"] if server["name"] == "time")
    assert (time["tools"], time["listed_at"]) == (None, None)


def test_the_subtask_page_names_the_mcp_server_of_each_call_and_the_tools_offered(db):
    root = staff("root", superuser=True)
    approval = waiting_tool_call(root, tool="fs__write_file", arguments={"path": "<b>x</b>.txt", "content": "hi"})
    offered = [
        {"name": "fs__write_file", "server": "fs", "tool": "write_file", "description": "", "parameters": {}},
        {"name": "git__git_status", "server": "git", "tool": "git_status", "description": "", "parameters": {}},
    ]
    call = {"id": "c1", "type": "function", "function": {"name": "fs__write_file", "arguments": "{}"}}
    conversation = [{"role": "user", "content": "go"}, {"role": "assistant", "content": None, "tool_calls": [call]}]
    type(approval.subtask).objects.filter(pk=approval.subtask_id).update(
        agent_state={"mcp_tools": offered}, conversation=conversation
    )

    page = client_for(root).get(reverse("admin:plans_subtask_change", args=[approval.subtask_id])).content.decode()

    assert page.count("fs__write_file <small>(MCP server fs)</small>") == 2  # the tool call and the model's message
    assert "server <b>fs</b>: write_file" in page
    assert "server <b>git</b>: git_status" in page
    assert "&lt;b&gt;x&lt;/b&gt;.txt" in page
