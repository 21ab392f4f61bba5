"""The test cluster's own agents: language models on the fake server, and the example HTTP agent service."""

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.processes import ROOT
from tests.fakes.openai_server import FakeOpenAI, write_agents_file
from tests.mcp.servers import TOKEN, TOKEN_VARIABLE, McpSetup, agent_definitions, mcp_setup
from tests.support.agent_contexts import READ_FILE, WRITE_FILE

# What `llm_structured` must answer.
VERDICT = {
    "type": "object",
    "properties": {"verdict": {"enum": ["ok", "fix"]}},
    "required": ["verdict"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class TestAgents:
    """Where the agents file and the workspace of the worker tools are, what the MCP agents use."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    path: Path
    workspace: Path
    mcp: McpSetup
    # What the workers' environment holds besides (the MCP agents' header value).
    env: dict[str, str]


def definitions(server: FakeOpenAI, http_agent_url: str, mcp: McpSetup) -> dict:
    """Return the test agents: `llm` (write_file needs approval, read_file does not), `llm_plain` (the same,
    not streamed), `llm_short`, `llm_structured` (answers a VERDICT), `helper`, `llm_pair` (two runs at once)
    and `llm_held` (for Retry-After), and the MCP agents of tests/mcp/servers.py."""
    return {
        "llm": server.agent_definition(
            system_prompt="You write code.", max_steps=5, timeout_s=2, tools=[WRITE_FILE, READ_FILE]
        ),
        "llm_short": server.agent_definition(max_steps=2, tools=[READ_FILE]),
        "llm_plain": server.agent_definition(stream=False, max_steps=5, timeout_s=2, tools=[WRITE_FILE, READ_FILE]),
        "llm_structured": server.agent_definition(output_schema=VERDICT),
        "helper": {"kind": "http", "url": http_agent_url, "timeout_s": 5},
        "llm_pair": server.agent_definition(max_concurrency=2, timeout_s=10),
        "llm_held": server.agent_definition(timeout_s=10),
        **agent_definitions(mcp, server.agent_definition()),
    }


@pytest.fixture(scope="session")
def test_agents(openai_server, tmp_path_factory) -> Iterator[TestAgents]:
    """The agents file every worker reads (EXECUTION_AGENTS_FILE), with the example HTTP agent running."""
    folder = tmp_path_factory.mktemp("agents")
    workspace = folder / "workspace"
    workspace.mkdir()
    (workspace / "notes.txt").write_text("Remember the milk.\n")
    (folder / "secret.txt").write_text("not for models\n")
    example = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "http_agent.py"), "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        line = example.stdout.readline() if example.stdout else ""
        url = line.removeprefix("listening on ").strip()
        mcp = mcp_setup(folder)
        path = write_agents_file(folder / "agents.json", definitions(openai_server, url, mcp))
        yield TestAgents(path=path, workspace=workspace, mcp=mcp, env={TOKEN_VARIABLE: TOKEN})
    finally:
        example.terminate()
        example.wait(10)
