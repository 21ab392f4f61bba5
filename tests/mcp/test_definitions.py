"""An openai agent's `mcp_servers`: checked at start like every field of the agents file, never contacted then."""

import json
import re

import pytest

from execution.agents.definitions import AgentsFileError, agents_file_read
from execution.agents.mcp_servers import DEFAULT_TIMEOUT_S

OPENAI = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
STDIO = {"name": "fs", "command": "mcp-server-filesystem", "args": ["/srv/workspace"]}
HTTP = {"name": "tracker", "url": "https://mcp.example/mcp", "headers": {"Authorization": "env:TRACKER_TOKEN"}}


def read(tmp_path, *servers, **options):
    path = tmp_path / "agents.json"
    path.write_text(json.dumps({"coder": {**OPENAI, **options, "mcp_servers": list(servers)}}))
    return agents_file_read(str(path))["coder"]


def test_servers_are_built_with_their_defaults_and_not_contacted(tmp_path):
    unreachable = {"name": "nowhere", "url": "http://127.0.0.1:9/mcp"}
    missing = {"name": "missing", "command": "no-such-mcp-server"}

    coder = read(tmp_path, STDIO, HTTP, unreachable, missing)

    fs, tracker, *_ = coder.mcp_servers
    assert (fs.transport, fs.command, fs.args, fs.tools, fs.timeout_s) == (
        "stdio",
        "mcp-server-filesystem",
        ("/srv/workspace",),
        None,
        DEFAULT_TIMEOUT_S,
    )
    assert fs.needs_approval("write_file")
    assert (tracker.transport, tracker.headers) == ("http", {"Authorization": "TRACKER_TOKEN"})
    assert "MCP servers: fs (stdio), tracker (http), nowhere (http), missing (stdio)" in coder.description


def test_approval_is_per_server_with_per_tool_overrides(tmp_path):
    server = {**STDIO, "requires_approval": False, "approval": {"write_file": True}}
    [fs] = read(tmp_path, server).mcp_servers
    assert (fs.needs_approval("read_text_file"), fs.needs_approval("write_file")) == (False, True)


def test_a_server_is_described_without_its_headers_values(tmp_path):
    [tracker] = read(tmp_path, {**HTTP, "url": "https://user:pw@mcp.example/mcp?key=k"}).mcp_servers
    described = json.dumps(tracker.describe())
    assert "pw" not in described
    assert "key=k" not in described
    assert tracker.describe()["headers"] == ["Authorization"]


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ({}, '"mcp_servers" must be a list'),
        ([["fs"]], '"mcp_servers[0]" must be an object'),
        ([{"command": "x"}], '"mcp_servers[0].name" is required'),
        ([{**STDIO, "name": "f s"}], '"mcp_servers[0].name" is required: 1 to 32 letters'),
        ([{**STDIO, "name": "x" * 33}], '"mcp_servers[0].name" is required: 1 to 32 letters'),
        ([{"name": "fs"}], '"mcp_servers[0].url" or "command" is required, not both'),
        ([{**STDIO, "url": "http://x/mcp"}], '"mcp_servers[0].url" or "command" is required, not both'),
        ([{"name": "a", "url": "ftp://x/"}], '"mcp_servers[0].url" must be an http:// or https:// URL'),
        ([{"name": "a", "command": ""}], '"mcp_servers[0].command" must be a non-empty string'),
        ([{**STDIO, "args": "/srv"}], '"mcp_servers[0].args" must be a list of strings'),
        ([{**STDIO, "env": {"DEBUG": 1}}], '"mcp_servers[0].env.DEBUG" must be a string'),
        ([{**STDIO, "headers": {}}], '"mcp_servers[0].headers" is for Streamable HTTP servers only'),
        ([{**HTTP, "args": []}], '"mcp_servers[0].args" is for stdio servers only'),
        (
            [{**HTTP, "headers": {"Authorization": "Bearer s3cret"}}],
            '"mcp_servers[0].headers.Authorization" must be "env:VAR"',
        ),
        (
            [{**HTTP, "headers": {"Bad Header": "env:X"}}],
            '"mcp_servers[0].headers.Bad Header" is not a valid HTTP header',
        ),
        ([{**STDIO, "tools": "write_file"}], '"mcp_servers[0].tools" must be a list of strings'),
        ([{**STDIO, "tools": ["x" * 70]}], '"mcp_servers[0].tools[0]" "fs__xxxx'),
        ([{**STDIO, "approval": {"write_file": "yes"}}], '"mcp_servers[0].approval.write_file" must be true or false'),
        (
            [{**STDIO, "tools": ["read_text_file"], "approval": {"write_file": True}}],
            '"mcp_servers[0].approval.write_file" names a tool that its `tools` leaves out',
        ),
        ([{**STDIO, "requires_approval": "no"}], '"mcp_servers[0].requires_approval" must be true or false'),
        ([{**STDIO, "timeout_s": 0}], '"mcp_servers[0].timeout_s" must be more than 0'),
        ([{**STDIO, "cwd": "/srv"}], '"mcp_servers[0].cwd" is not a server field'),
        ([STDIO, {**HTTP, "name": "fs"}], '"mcp_servers[1].name" "fs" is declared twice'),
    ],
)
def test_a_bad_server_names_the_agent_and_the_field(tmp_path, servers, message):
    path = tmp_path / "agents.json"
    path.write_text(json.dumps({"coder": {**OPENAI, "mcp_servers": servers}}))
    with pytest.raises(AgentsFileError, match=re.escape(f'agent "coder": {message}')):
        agents_file_read(str(path))


def test_a_server_may_not_offer_tools_named_like_one_of_the_agents_own(tmp_path):
    own = [{"name": "fs__write_file", "parameters": {"type": "object"}}]
    with pytest.raises(AgentsFileError, match=r'"mcp_servers\[0\].name" would offer tools named like the tool'):
        read(tmp_path, STDIO, tools=own)
