"""A stdio MCP server never outlives the process that started it, however that process ends."""

import os
import signal
import subprocess
import sys

import pytest
from celery.signals import worker_process_shutdown

from execution.agents.mcp_connections import McpSessions
from execution.agents.mcp_servers import McpServer
from tests.mcp.servers import ROOT, alive, command_line, descendants, guards_of
from tests.support.flows import wait_for

# A process that starts the time server as a worker's pool process does, then waits for its end.
# The server leaves a process behind that never reads its stdin, as wrappers like npx may:
# only the guard stopping the whole group ends that one.
SCRIPT = """
import sys, time
from execution.agents.mcp_connections import McpSessions
from execution.agents.mcp_servers import McpServer

command = "sleep 600 & exec $0 -m mcp_server_time"
server = McpServer(name="time", command="sh", args=("-c", command, sys.executable))
with McpSessions() as sessions:
    [tools] = sessions.list_tools(server)
    print(len(tools), flush=True)
if sys.argv[1] == "exit":
    sys.exit(0)
time.sleep(600)
"""


@pytest.mark.parametrize("end", ["exit", "SIGTERM", "SIGKILL"])
def test_the_server_and_its_guard_stop_with_the_process_that_started_them(end):
    owner = subprocess.Popen([sys.executable, "-c", SCRIPT, end], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "2"  # get_current_time and convert_time
        started = descendants(owner.pid)
        commands = [command_line(pid) for pid in started]
        assert any("mcp_guard.py" in command for command in commands)
        assert any("-m mcp_server_time" in command and "mcp_guard" not in command for command in commands)
        assert any(command.startswith("sleep 600") for command in commands)
        if end != "exit":
            owner.send_signal(getattr(signal, end))
        owner.wait(10)

        try:
            # The guard gives the server 2 s after its SIGTERM: the bound leaves room for a loaded machine.
            wait_for(lambda: not any(alive(pid) for pid in started), message="the MCP server processes to end")
        except AssertionError:
            left = {pid: command_line(pid) for pid in started if alive(pid)}
            raise AssertionError(f"Still running after the owner's end ({end}): {left}") from None
    finally:
        owner.kill()
        owner.wait()


def test_the_guard_reports_a_command_it_cannot_start():
    guard = ROOT / "execution" / "agents" / "mcp_guard.py"
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(guard), "no-such-mcp-server"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 127
    assert "cannot start 'no-such-mcp-server'" in result.stderr


def test_a_pool_process_that_exits_stops_its_servers_when_celery_says_so():
    with McpSessions() as sessions:
        sessions.list_tools(McpServer(name="time", command=sys.executable, args=("-m", "mcp_server_time")))
    started = guards_of(os.getpid())
    started += [child for guard in started for child in descendants(guard)]
    assert started

    worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)

    wait_for(lambda: not any(alive(pid) for pid in started), timeout=10, message="the MCP server processes to end")
