"""Tools an LLM agent may declare, and the built-in worker tools confined to EXECUTION_WORKSPACE_DIR.

A tool runs either on the client (`runs: "client"`: the client runs it and sends its
result with the approval) or on the worker (`runs: "worker"`: one of WORKER_TOOLS,
run by the agent itself). Worker tools only ever see paths inside the workspace: an
absolute path, `..`, or a symlink leading out is refused with a ToolError, which the
agent reports to the model as the tool's answer.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

READ_FILE_DEFAULT_BYTES = 64 * 1024
READ_FILE_MAX_BYTES = 1024 * 1024
LIST_FILES_MAX_ENTRIES = 500


class ToolError(Exception):
    """A tool call could not be carried out; the message is what the model is told."""


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its schema, who runs it, and whether a person approves it."""

    name: str
    description: str
    parameters: dict[str, Any]
    requires_approval: bool = True
    runs: str = "client"

    def as_function(self) -> dict[str, Any]:
        """Return the tool as the Chat Completions API lists it."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


def workspace() -> Path:
    """Return the workspace the worker tools are confined to."""
    configured = settings.EXECUTION_WORKSPACE_DIR
    if not configured:
        raise ToolError("Worker tools are not available here: no workspace is configured (EXECUTION_WORKSPACE_DIR).")
    root = Path(configured).resolve()
    if not root.is_dir():
        raise ToolError("Worker tools are not available here: the workspace directory does not exist.")
    return root


def inside_workspace(path: Any) -> Path:
    """Return `path` (relative to the workspace) resolved, refusing anything that leads outside it."""
    if not isinstance(path, str) or not path:
        raise ToolError("A path relative to the workspace is required.")
    if Path(path).is_absolute():
        raise ToolError(f"{path!r} is an absolute path; give a path relative to the workspace.")
    root = workspace()
    # resolve() follows symlinks, so a link pointing out of the workspace is caught too.
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise ToolError(f"{path!r} is outside the workspace; paths must stay inside it.")
    return target


def read_file(arguments: dict[str, Any]) -> str:
    """Return the start of a text file in the workspace."""
    target = inside_workspace(arguments.get("path"))
    limit = arguments.get("max_bytes", READ_FILE_DEFAULT_BYTES)
    if target.is_dir():
        raise ToolError(f"{arguments['path']!r} is a directory; list it with list_files.")
    try:
        size = target.stat().st_size
        with target.open("rb") as file:
            data = file.read(limit)
    except FileNotFoundError:
        raise ToolError(f"{arguments['path']!r} does not exist.") from None
    except OSError as error:
        raise ToolError(f"{arguments['path']!r} cannot be read: {error.strerror}.") from None
    text = data.decode("utf-8", errors="replace")
    if size > limit:
        text += f"\n[truncated: the first {limit} of {size} bytes]"
    return text


def list_files(arguments: dict[str, Any]) -> str:
    """Return a directory's entries in the workspace, one per line, directories ending in '/'."""
    path = arguments.get("path") or "."
    target = inside_workspace(path)
    if not target.is_dir():
        raise ToolError(f"{path!r} is not a directory." if target.exists() else f"{path!r} does not exist.")
    try:
        entries = sorted(target.iterdir(), key=lambda entry: entry.name)
    except OSError as error:
        raise ToolError(f"{path!r} cannot be listed: {error.strerror}.") from None
    lines = [f"{entry.name}/" if entry.is_dir() else entry.name for entry in entries[:LIST_FILES_MAX_ENTRIES]]
    if len(entries) > LIST_FILES_MAX_ENTRIES:
        lines.append(f"[{len(entries) - LIST_FILES_MAX_ENTRIES} more entries not shown]")
    return "\n".join(lines) or "(empty directory)"


@dataclass(frozen=True)
class WorkerTool:
    description: str
    parameters: dict[str, Any]
    function: Callable[[dict[str, Any]], str]


WORKER_TOOLS: dict[str, WorkerTool] = {
    "read_file": WorkerTool(
        description="Read a text file of the workspace (paths are relative to the workspace).",
        parameters={
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "The file's path, relative to the workspace."},
                "max_bytes": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": READ_FILE_MAX_BYTES,
                    "description": f"Read at most this many bytes (default {READ_FILE_DEFAULT_BYTES}).",
                },
            },
            "required": ["path"],
            "additionalProperties": False,
        },
        function=read_file,
    ),
    "list_files": WorkerTool(
        description="List a directory of the workspace; directories end with '/'.",
        parameters={
            "type": "object",
            "properties": {
                "path": {
                    "type": "string",
                    "description": "The directory's path, relative to the workspace (default: the workspace itself).",
                },
            },
            "additionalProperties": False,
        },
        function=list_files,
    ),
}


def worker_tool_run(name: str, arguments: dict[str, Any]) -> str:
    """Run a built-in worker tool; raise ToolError with what to tell the model when it cannot."""
    return WORKER_TOOLS[name].function(arguments)
