"""The reference MCP servers the tests run against, as a user would install them, and the agents that use them.

- `mcp-server-time` and `mcp-server-git` (Python, pinned in requirements-dev.txt), run by
  the workers over stdio;
- `@modelcontextprotocol/server-filesystem` (npm, over stdio) and
  `@modelcontextprotocol/server-everything` (npm, over Streamable HTTP), pinned in
  tests/mcp/package-lock.json and installed with `npm ci` into .mcp-servers/ (git ignores
  it) the first time a session needs them, again only when the lock file changes.

The workers learn the MCP agents from the session's agents file (tests/agents_file.py)
before any server exists: servers are contacted when a subtask first calls its model.
"""

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.servers import free_port, port_is_free, stop, wait_until

ROOT = Path(__file__).resolve().parents[2]
LOCK = Path(__file__).with_name("package-lock.json")
NPM_DIR = ROOT / ".mcp-servers"
PACKAGES = NPM_DIR / "node_modules" / "@modelcontextprotocol"
FILESYSTEM = PACKAGES / "server-filesystem" / "dist" / "index.js"
EVERYTHING = PACKAGES / "server-everything" / "dist" / "index.js"
# The header the HTTP server is sent, its value read from this variable by the workers.
TOKEN_VARIABLE = "MCP_TEST_TOKEN"
TOKEN = "mcp-token-that-must-never-show"


@dataclass(frozen=True)
class McpSetup:
    """What the MCP agents' servers use: the filesystem server's workspace, the git repository, the HTTP port."""

    __test__ = False

    workspace: Path
    repository: Path
    http_port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/mcp"


def mcp_setup(folder: Path) -> McpSetup:
    """Make the workspace and the git repository the MCP agents use, and choose the HTTP server's port."""
    workspace = folder / "mcp-workspace"
    workspace.mkdir()
    (workspace / "notes.txt").write_text("Remember the milk.\n")
    repository = folder / "repository"
    repository.mkdir()
    git = ["git", "-C", str(repository), "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    (repository / "README.md").write_text("A repository for the git MCP server.\n")
    subprocess.run([*git, "add", "README.md"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "First commit"], check=True)
    return McpSetup(workspace=workspace, repository=repository, http_port=free_port())


def agent_definitions(setup: McpSetup, openai: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the MCP test agents: `mcp` (time, filesystem, git over stdio; everything over HTTP) and `mcp_http`."""
    everything = {
        "name": "everything",
        "url": setup.http_url,
        "headers": {"Authorization": f"env:{TOKEN_VARIABLE}"},
        "tools": ["echo", "get-sum", "get-structured-content", "trigger-long-running-operation"],
        "requires_approval": False,
        "timeout_s": 3,
    }
    stdio = [
        {"name": "time", "command": sys.executable, "args": ["-m", "mcp_server_time"], "requires_approval": False},
        {
            "name": "fs",
            "command": "node",
            "args": [str(FILESYSTEM), str(setup.workspace)],
            "tools": ["read_text_file", "write_file", "list_directory"],
            "approval": {"read_text_file": False, "list_directory": False},
        },
        {
            "name": "git",
            "command": sys.executable,
            "args": ["-m", "mcp_server_git", "--repository", str(setup.repository)],
            "tools": ["git_status", "git_log"],
            "approval": {"git_status": False},
        },
    ]
    return {
        "mcp": {**openai, "max_steps": 6, "timeout_s": 10, "mcp_servers": [*stdio, everything]},
        "mcp_http": {**openai, "max_steps": 4, "timeout_s": 10, "mcp_servers": [everything]},
    }


def npm_servers_installed() -> None:
    """Install the npm servers with `npm ci` unless this lock file's install is there already."""
    marker = NPM_DIR / "installed-lock.json"
    NPM_DIR.mkdir(exist_ok=True)
    with (NPM_DIR / "install.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # two sessions of one folder install once
        if marker.exists() and marker.read_bytes() == LOCK.read_bytes() and FILESYSTEM.exists() and EVERYTHING.exists():
            return
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed to install the reference MCP servers (Node 20 or later).")
        marker.unlink(missing_ok=True)
        shutil.copy(LOCK.with_name("package.json"), NPM_DIR / "package.json")
        shutil.copy(LOCK, NPM_DIR / "package-lock.json")
        command = [npm, "ci", "--no-audit", "--no-fund", "--loglevel", "error"]
        result = subprocess.run(command, cwd=NPM_DIR, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"npm ci of the MCP test servers failed:\n{result.stderr[-3000:]}")
        shutil.copy(LOCK, marker)


class EverythingServer:
    """The reference "everything" server over Streamable HTTP on a given port, which tests stop and start again."""

    def __init__(self, port: int, log: Path) -> None:
        self.port, self.log = port, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["node", str(EVERYTHING), "streamableHttp"],
                env={**os.environ, "PORT": str(self.port)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: not port_is_free(self.port), "the everything MCP server", self.process, self.log)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, signal.SIGTERM, timeout=5)
            self.process = None

    @classmethod
    @contextlib.contextmanager
    def running(cls, port: int, log: Path) -> Iterator["EverythingServer"]:
        server = cls(port, log)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def descendants(pid: int) -> list[int]:
    """Return the pids of every process descended from `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def guards_of(pid: int) -> list[int]:
    """Return the MCP guards that process `pid` started itself (not those of its children, a worker's pool)."""
    return [child for child in descendants(pid) if parent_of(child) == pid and "mcp_guard.py" in command_line(child)]


def parent_of(pid: int) -> int:
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return 0


def command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


def alive(pid: int) -> bool:
    """Tell whether a process runs (a zombie, dead but not reaped, does not)."""
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False
