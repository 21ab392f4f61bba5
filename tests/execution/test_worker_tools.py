"""The worker tools read and list files inside EXECUTION_WORKSPACE_DIR and nowhere else."""

import pytest

from execution.agents.tools import ToolError, worker_tool_run


@pytest.fixture
def workspace(settings, tmp_path):
    root = tmp_path / "workspace"
    (root / "lib" / "screens").mkdir(parents=True)
    (root / "lib" / "main.dart").write_text("void main() {}")
    (root / "README.md").write_text("# todo_app")
    (tmp_path / "secret.txt").write_text("the secret")
    settings.EXECUTION_WORKSPACE_DIR = str(root)
    return root


def test_read_file_returns_a_files_text(workspace):
    assert worker_tool_run("read_file", {"path": "lib/main.dart"}) == "void main() {}"


def test_read_file_stops_at_max_bytes_and_says_so(workspace):
    text = worker_tool_run("read_file", {"path": "README.md", "max_bytes": 3})
    assert text.startswith("# t")
    assert "truncated: the first 3 of 10 bytes" in text


def test_list_files_lists_a_directory_with_directories_marked(workspace):
    assert worker_tool_run("list_files", {}) == "README.md\nlib/"
    assert worker_tool_run("list_files", {"path": "lib"}) == "main.dart\nscreens/"
    assert worker_tool_run("list_files", {"path": "lib/screens"}) == "(empty directory)"


def test_a_symlink_inside_the_workspace_is_followed(workspace):
    (workspace / "entry.dart").symlink_to(workspace / "lib" / "main.dart")
    assert worker_tool_run("read_file", {"path": "entry.dart"}) == "void main() {}"


@pytest.mark.parametrize(
    ("tool", "path", "problem"),
    [
        ("read_file", "../secret.txt", "outside the workspace"),
        ("read_file", "lib/../../secret.txt", "outside the workspace"),
        ("read_file", "/etc/passwd", "absolute path"),
        ("read_file", "out/secret.txt", "outside the workspace"),
        ("list_files", "..", "outside the workspace"),
        ("list_files", "out", "outside the workspace"),
        ("read_file", "missing.txt", "does not exist"),
        ("read_file", "lib", "is a directory"),
        ("list_files", "README.md", "is not a directory"),
    ],
)
def test_paths_outside_the_workspace_and_mistakes_are_refused(workspace, tool, path, problem):
    (workspace / "out").symlink_to(workspace.parent)
    with pytest.raises(ToolError, match=problem):
        worker_tool_run(tool, {"path": path})


def test_without_a_workspace_the_worker_tools_refuse(settings):
    settings.EXECUTION_WORKSPACE_DIR = ""
    with pytest.raises(ToolError, match="EXECUTION_WORKSPACE_DIR"):
        worker_tool_run("list_files", {})
