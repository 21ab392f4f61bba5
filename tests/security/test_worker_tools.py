"""Worker tools: every path problem is a tool error; only regular files inside the workspace are read."""

import json
import os
import threading

import pytest

from execution.agents import tools
from execution.agents.tools import ToolError, worker_tool_run
from plans.json_values import json_problem


@pytest.fixture
def workspace(settings, tmp_path):
    root = tmp_path / "workspace"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "main.dart").write_text("void main() {}")
    (tmp_path / "secret.txt").write_text("the secret")
    settings.EXECUTION_WORKSPACE_DIR = str(root)
    return root


@pytest.mark.parametrize("tool", ["read_file", "list_files"])
def test_a_nul_byte_in_a_path_is_a_tool_error(workspace, tool):
    with pytest.raises(ToolError, match="NUL"):
        worker_tool_run(tool, {"path": "lib/main.dart\x00.png"})


@pytest.mark.parametrize("tool", ["read_file", "list_files"])
def test_a_symlink_loop_is_a_tool_error(workspace, tool):
    (workspace / "loop").symlink_to(workspace / "loop")
    with pytest.raises(ToolError):
        worker_tool_run(tool, {"path": "loop"})


def test_a_path_too_long_for_the_system_is_a_tool_error(workspace):
    with pytest.raises(ToolError):
        worker_tool_run("read_file", {"path": "x" * 5000})


def test_a_fifo_in_the_workspace_is_refused_without_blocking(workspace):
    os.mkfifo(workspace / "pipe")
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(worker_tool_run("read_file", {"path": "pipe"}))
        except ToolError as error:
            outcome.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():
        # Unblock the reader before failing: a writer opening the FIFO releases its open().
        with open(workspace / "pipe", "w"):
            pass
        reader.join(timeout=5)
        pytest.fail("read_file blocked on a FIFO")
    assert isinstance(outcome[0], ToolError)
    assert "not a regular file" in str(outcome[0])


def test_a_file_with_nul_bytes_is_read_with_the_nul_bytes_escaped(workspace):
    (workspace / "data.bin").write_bytes(b"head\x00tail")
    text = worker_tool_run("read_file", {"path": "data.bin"})
    assert "\x00" not in text
    assert text == "head\\x00tail"
    # What the conversation stores: a JSON value PostgreSQL takes.
    assert not json_problem({"role": "tool", "content": text})


def test_a_symlink_swapped_in_after_the_check_is_not_followed(workspace, monkeypatch):
    """The race: the path is checked, then a directory on it becomes a link out of the workspace."""
    checked = tools.inside_workspace

    def check_then_swap(path):
        target = checked(path)
        (workspace / "lib" / "main.dart").unlink()
        (workspace / "lib").rmdir()
        (workspace / "lib").symlink_to(workspace.parent)
        (workspace.parent / "main.dart").write_text("outside")
        return target

    monkeypatch.setattr(tools, "inside_workspace", check_then_swap)
    with pytest.raises(ToolError, match="changed"):
        worker_tool_run("read_file", {"path": "lib/main.dart"})


def test_a_huge_directory_is_listed_without_reading_all_of_it(workspace, monkeypatch):
    big = workspace / "big"
    big.mkdir()
    for number in range(tools.LIST_FILES_MAX_ENTRIES + 50):
        (big / f"f{number:05}").touch()
    read = 0
    real_scandir = os.scandir

    class Counting:
        def __init__(self, entries):
            self.entries = entries

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.entries.close()

        def __iter__(self):
            nonlocal read
            for entry in self.entries:
                read += 1
                yield entry

    monkeypatch.setattr(tools.os, "scandir", lambda path: Counting(real_scandir(path)))
    listing = worker_tool_run("list_files", {"path": "big"}).splitlines()
    assert read <= tools.LIST_FILES_MAX_ENTRIES + 1
    assert len(listing) == tools.LIST_FILES_MAX_ENTRIES + 1
    assert "more entries not shown" in listing[-1]
    assert json.dumps(listing)
