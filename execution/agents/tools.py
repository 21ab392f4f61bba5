"""Tools an LLM agent may declare, and the built-in worker tools confined to EXECUTION_WORKSPACE_DIR.

A tool runs either on the client (`runs: "client"`: the client runs it and sends its
result with the approval) or on the worker (`runs: "worker"`: one of WORKER_TOOLS,
run by the agent itself). Worker tools only ever see paths inside the workspace: an
absolute path, `..`, or a symlink leading out is refused with a ToolError, which the
agent reports to the model as the tool's answer. So is every other problem with a path
(a NUL byte, a loop of links, a name too long), whatever the operating system says.

The check resolves the path; the open then walks the resolved path again one directory
at a time from the workspace, never following a link (O_NOFOLLOW), so a directory
swapped for a link between the two is refused instead of followed out of the workspace.
Only regular files are read, opened without blocking (a FIFO would wait for a writer).
"""

import errno
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from plans.json_values import storable_text

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
    if "\x00" in path:
        raise ToolError(f"{path!r} holds a NUL byte, which no file name may contain.")
    if Path(path).is_absolute():
        raise ToolError(f"{path!r} is an absolute path; give a path relative to the workspace.")
    root = workspace()
    # resolve() follows symlinks, so a link pointing out of the workspace is caught too.
    try:
        target = (root / path).resolve()
    except (OSError, RuntimeError) as error:  # a loop of links is a RuntimeError before Python 3.13
        raise ToolError(f"{path!r} cannot be followed: {_reason(error)}.") from None
    if not target.is_relative_to(root):
        raise ToolError(f"{path!r} is outside the workspace; paths must stay inside it.")
    return target


def _reason(error: BaseException) -> str:
    return (error.strerror if isinstance(error, OSError) else None) or str(error) or type(error).__name__


@contextmanager
def _opened(path: str, target: Path, *, directory: bool) -> Iterator[tuple[int, os.stat_result]]:
    """Yield a descriptor of `target` and its status, opened from the workspace down following no link."""
    root = workspace()
    parts = target.relative_to(root).parts
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    descriptors = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            try:
                descriptors.append(
                    os.open(part, flags | (os.O_DIRECTORY if directory or not last else 0), dir_fd=descriptors[-1])
                )
            except NotADirectoryError:
                if last:
                    raise ToolError(f"{path!r} is not a directory.") from None
                raise ToolError(f"{path!r} changed while being opened; it is not read.") from None
        yield descriptors[-1], os.fstat(descriptors[-1])
    except FileNotFoundError:
        raise ToolError(f"{path!r} does not exist.") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            # A link where the check saw none: the path changed since.
            raise ToolError(f"{path!r} changed while being opened; it is not read.") from None
        raise ToolError(f"{path!r} cannot be opened: {_reason(error)}.") from None
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


def read_file(arguments: dict[str, Any]) -> str:
    """Return the start of a regular text file in the workspace, NUL bytes written out as \\x00."""
    path = arguments.get("path")
    target = inside_workspace(path)
    limit = arguments.get("max_bytes", READ_FILE_DEFAULT_BYTES)
    with _opened(str(path), target, directory=False) as (descriptor, info):
        if stat.S_ISDIR(info.st_mode):
            raise ToolError(f"{path!r} is a directory; list it with list_files.")
        if not stat.S_ISREG(info.st_mode):
            raise ToolError(f"{path!r} is not a regular file; only files are read.")
        try:
            data = os.read(descriptor, limit)
        except OSError as error:
            raise ToolError(f"{path!r} cannot be read: {_reason(error)}.") from None
    text = storable_text(data.decode("utf-8", errors="replace"))
    if info.st_size > limit:
        text += f"\n[truncated: the first {limit} of {info.st_size} bytes]"
    return text


def list_files(arguments: dict[str, Any]) -> str:
    """Return a directory's entries in the workspace, one per line, directories ending in '/'.

    Reading stops after LIST_FILES_MAX_ENTRIES entries: a huge directory costs no more than
    a small one, and the entries shown are the first ones read, sorted by name.
    """
    path = arguments.get("path") or "."
    target = inside_workspace(path)
    entries: list[str] = []
    more = False
    with _opened(str(path), target, directory=True) as (descriptor, _):
        try:
            with os.scandir(descriptor) as scan:
                for entry in scan:
                    if len(entries) == LIST_FILES_MAX_ENTRIES:
                        more = True
                        break
                    entries.append(f"{entry.name}/" if entry.is_dir(follow_symlinks=False) else entry.name)
        except OSError as error:
            raise ToolError(f"{path!r} cannot be listed: {_reason(error)}.") from None
    lines = sorted(entries)
    if more:
        lines.append(f"[more entries not shown: the listing stops at {LIST_FILES_MAX_ENTRIES}]")
    return "\n".join(storable_text(line) for line in lines) or "(empty directory)"


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
