"""Agents from EXECUTION_AGENTS_FILE: every field checked at start, a bad file stops each process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from execution.agents.definitions import AgentsFileError, agents_file_read
from execution.agents.http import HttpAgent
from execution.agents.openai import OpenAIAgent
from execution.agents.python import PythonAgent
from execution.agents.registry import agent_get, agent_input_errors, agent_names, agents_describe
from execution.agents.script import ScriptAgent
from execution.agents.tools import WORKER_TOOLS
from plans.services import plan_limits
from plans.validation import validate_plan
from scripts.processes import ROOT

EXAMPLES = ROOT / "examples"
OPENAI = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}}


def write(tmp_path: Path, content) -> str:
    path = tmp_path / "agents.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_each_kind_builds_its_agent(tmp_path):
    agents = agents_file_read(
        write(
            tmp_path,
            {
                "demo": {"kind": "script"},
                "remote": {"kind": "http", "url": "http://127.0.0.1:9/step", "timeout_s": 5},
                "keys": {"kind": "python", "callable": "tests.support.agents.dependency_keys"},
                "coder": {**OPENAI, "max_steps": 5, "tools": [{"name": "write_file", "parameters": SCHEMA}]},
            },
        )
    )
    assert [type(agents[name]) for name in ("demo", "remote", "keys", "coder")] == [
        ScriptAgent,
        HttpAgent,
        PythonAgent,
        OpenAIAgent,
    ]
    assert agents["remote"].options == {"url": "http://127.0.0.1:9/step", "timeout_s": 5}
    coder = agents["coder"]
    assert (coder.model, coder.max_steps, coder.timeout_s) == ("m", 5, 120.0)
    assert coder.tools["write_file"].requires_approval is True
    assert coder.tools["write_file"].runs == "client"


def test_a_worker_tool_gets_its_built_in_description_and_schema(tmp_path):
    agents = agents_file_read(write(tmp_path, {"ask": {**OPENAI, "tools": [{"name": "read_file", "runs": "worker"}]}}))
    tool = agents["ask"].tools["read_file"]
    assert (tool.description, tool.parameters) == (
        WORKER_TOOLS["read_file"].description,
        WORKER_TOOLS["read_file"].parameters,
    )
    assert tool.requires_approval is True


def test_a_worker_tool_may_give_its_own_description_and_parameters_as_the_spec_writes_every_tool(tmp_path):
    given = {
        "type": "object",
        "properties": {"path": {"type": "string", "description": "A file of the project."}},
        "required": ["path"],
    }
    read_file = {"name": "read_file", "runs": "worker", "description": "Read a file.", "parameters": given}
    agents = agents_file_read(write(tmp_path, {"ask": {**OPENAI, "tools": [read_file]}}))

    tool = agents["ask"].tools["read_file"]
    assert (tool.description, tool.parameters, tool.runs) == ("Read a file.", given, "worker")


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"base_url": "http://x/v1"}, '"kind" is required'),
        ({"kind": "langchain"}, '"kind" must be one of script, http, python, openai'),
        ([], '"kind" is required'),
        ({"kind": "openai", "base_url": "http://x/v1"}, '"model" is required'),
        ({"kind": "openai", "model": "m"}, '"base_url" is required'),
        ({**OPENAI, "base_url": "localhost:11434"}, '"base_url" must be an http:// or https:// URL'),
        ({**OPENAI, "model": 7}, '"model" must be a non-empty string'),
        ({**OPENAI, "max_steps": 0}, '"max_steps" must be at least 1'),
        ({**OPENAI, "max_steps": 2.5}, '"max_steps" must be an integer'),
        ({**OPENAI, "temperature": "hot"}, '"temperature" must be a number'),
        ({**OPENAI, "timeout_s": 0}, '"timeout_s" must be more than 0'),
        ({**OPENAI, "api_key_env": "my key"}, '"api_key_env" must be the name of an environment variable'),
        ({**OPENAI, "max_retries": 3}, '"max_retries" is not an option of this kind'),
        ({**OPENAI, "tools": {}}, '"tools" must be a list'),
        ({**OPENAI, "tools": [{"description": "no name"}]}, '"tools[0].name" is required'),
        ({**OPENAI, "tools": [{"name": "write file"}]}, '"tools[0].name" must be 1 to 64 letters'),
        ({**OPENAI, "tools": [{"name": "a"}, {"name": "a"}]}, '"tools[1].name" "a" is declared twice'),
        (
            {**OPENAI, "tools": [{"name": "a", "parameters": {"type": 12}}]},
            '"tools[0].parameters" is not a valid JSON Schema',
        ),
        (
            {**OPENAI, "tools": [{"name": "a", "parameters": {"type": "string"}}]},
            '"tools[0].parameters" must describe an object',
        ),
        (
            {**OPENAI, "tools": [{"name": "a", "requires_approval": "yes"}]},
            '"tools[0].requires_approval" must be true or false',
        ),
        (
            {**OPENAI, "tools": [{"name": "a", "requires_approval": False}]},
            '"tools[0].requires_approval" must be true for a client tool',
        ),
        ({**OPENAI, "tools": [{"name": "a", "runs": "server"}]}, '"tools[0].runs" must be "client" or "worker"'),
        ({**OPENAI, "tools": [{"name": "rm", "runs": "worker"}]}, '"tools[0].name" "rm" is not a built-in worker tool'),
        (
            {**OPENAI, "tools": [{"name": "read_file", "runs": "worker", "parameters": {"type": "array"}}]},
            '"tools[0].parameters" must describe an object',
        ),
        ({**OPENAI, "tools": [{"name": "a", "colour": "red"}]}, '"tools[0].colour" is not a tool field'),
        ({"kind": "http"}, '"url" is required'),
        ({"kind": "http", "url": "http://x/", "timeout": 3}, '"timeout" is not an option of this kind'),
        ({"kind": "python"}, '"callable" is required'),
        ({"kind": "python", "callable": "tests.support.agents.nothing_here"}, '"callable" cannot be imported'),
        ({"kind": "script", "sleep_ms": 1}, '"sleep_ms" is not an option of this kind'),
    ],
)
def test_a_bad_definition_names_the_file_the_agent_and_the_field(tmp_path, definition, message):
    path = write(tmp_path, {"coder": definition})
    with pytest.raises(AgentsFileError) as raised:
        agents_file_read(path)
    assert str(raised.value).startswith(f'EXECUTION_AGENTS_FILE {path}: agent "coder": ')
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "is not valid JSON"),
        ("[]", "must be a JSON object mapping agent names to definitions"),
        ('{"a": {"kind": "script"}, "a": {"kind": "script"}}', '"a" appears twice'),
        (json.dumps({"x" * 65: {"kind": "script"}}), "a name has 1 to 64 characters"),
    ],
)
def test_a_bad_file_says_what_is_wrong_with_it(tmp_path, content, message):
    with pytest.raises(AgentsFileError, match=message):
        agents_file_read(write(tmp_path, content))


def test_a_missing_file_cannot_be_read(tmp_path):
    with pytest.raises(AgentsFileError, match=r"agents.json: cannot be read \(No such file or directory\)"):
        agents_file_read(str(tmp_path / "agents.json"))


def test_the_files_agents_join_the_built_in_ones_and_replace_those_of_the_same_name(settings, tmp_path):
    settings.EXECUTION_AGENTS_FILE = write(tmp_path, {"coder": OPENAI, "reviewer": {"kind": "script"}})
    assert {"script", "http", "python", "coder", "debug", "ask", "reviewer"} <= set(agent_names())
    assert isinstance(agent_get("coder"), OpenAIAgent)
    assert isinstance(agent_get("debug"), ScriptAgent)
    described = {entry["name"]: entry for entry in agents_describe()}
    assert described["coder"]["implementation"] == "execution.agents.openai.OpenAIAgent"
    assert "m at http://127.0.0.1:9/v1" in described["coder"]["description"]


def test_an_agents_description_shows_no_credentials_of_its_url(tmp_path):
    agents = agents_file_read(write(tmp_path, {"a": {**OPENAI, "base_url": "https://user:pw@llm.example/v1?key=k"}}))
    assert "pw" not in agents["a"].description
    assert "key=k" not in agents["a"].description
    assert "https://llm.example/v1" in agents["a"].description


def test_the_example_agents_file_defines_the_seeds_agents_as_language_models():
    agents = agents_file_read(str(EXAMPLES / "agents.json"))
    assert set(agents) == {"coder", "debug", "ask", "maintainer"}
    assert all(isinstance(agent, OpenAIAgent) for agent in agents.values())
    assert {"write_file", "execute_command", "read_file", "list_files"} == set(agents["coder"].tools)
    assert all(not tool.requires_approval for tool in agents["ask"].tools.values())
    assert all(tool.runs == "worker" for tool in agents["ask"].tools.values())


def test_the_example_mcp_agent_confines_the_filesystem_server_to_the_workspace_and_asks_before_changes():
    maintainer = agents_file_read(str(EXAMPLES / "agents.json"))["maintainer"]
    files, git = maintainer.mcp_servers
    assert (files.name, files.transport, files.args[-1]) == ("files", "stdio", "workspace")
    assert (git.name, git.args) == ("git", ("--repository", "workspace"))
    changes = ["write_file", "edit_file", "create_directory", "move_file"]
    assert [tool for tool in files.tools or () if files.needs_approval(tool)] == changes
    assert [tool for tool in git.tools or () if git.needs_approval(tool)] == ["git_add", "git_commit"]


def test_the_flutter_example_is_a_valid_plan_for_the_example_agents(settings):
    settings.EXECUTION_AGENTS_FILE = str(EXAMPLES / "agents.json")
    plan = json.loads((EXAMPLES / "flutter_app.json").read_text())
    spec = validate_plan(plan, agents=agent_names(), limits=plan_limits(), check_input=agent_input_errors)
    assert {item["agent"] for item in plan["subtasks"]} <= {"coder", "debug", "ask"}
    assert spec.subtasks


BAD = {"coder": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}}
MESSAGE = 'agent "coder": "model" is required'


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "manage.py", "check"],
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "--queues", "agents-file-check"],
        [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", "0"],
    ],
    ids=["manage.py", "celery-worker", "uvicorn"],
)
@pytest.mark.processes
def test_a_bad_agents_file_stops_the_process_at_start_with_the_message(tmp_path, command):
    path = write(tmp_path, BAD)
    env = {**os.environ, "EXECUTION_AGENTS_FILE": path, "DJANGO_SECRET_KEY": "test"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"EXECUTION_AGENTS_FILE {path}: {MESSAGE}" in done.stderr, done.stderr[-2000:]


@pytest.mark.processes
def test_a_good_agents_file_lets_the_process_start(tmp_path):
    env = {**os.environ, "EXECUTION_AGENTS_FILE": str(EXAMPLES / "agents.json"), "DJANGO_SECRET_KEY": "test"}
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
