"""Fixtures of the MCP tests: the npm servers installed, the HTTP server running, the MCP agents built here."""

from collections.abc import Iterator

import pytest

from execution.agents.base import Agent
from execution.agents.definitions import agent_from_definition
from tests.mcp.servers import TOKEN, TOKEN_VARIABLE, EverythingServer, agent_definitions, npm_servers_installed


@pytest.fixture(scope="session")
def npm_servers() -> None:
    """The npm reference servers, installed once (npm ci) unless they are already."""
    npm_servers_installed()


@pytest.fixture(scope="session")
def everything(npm_servers, test_agents, tmp_path_factory) -> Iterator[EverythingServer]:
    """The "everything" server over Streamable HTTP, on the port the agents file names; tests may stop and start it."""
    log = tmp_path_factory.mktemp("mcp") / "everything.log"
    with EverythingServer.running(test_agents.mcp.http_port, log) as server:
        yield server


@pytest.fixture
def mcp_token(monkeypatch) -> str:
    """The HTTP server's header value, in this process's environment as in the workers'."""
    monkeypatch.setenv(TOKEN_VARIABLE, TOKEN)
    return TOKEN


@pytest.fixture
def mcp_agent(fake_openai, test_agents, npm_servers, everything, mcp_token) -> Agent:
    """The `mcp` test agent (time, filesystem and git over stdio, everything over HTTP), run in this process."""
    return agent_from_definition("mcp", agent_definitions(test_agents.mcp, fake_openai.agent_definition())["mcp"])
