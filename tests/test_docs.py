"""The docs cannot drift: README stays a front door, and every variable the settings read is documented once."""

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
README_MAX_LINES = 200
# Where the service reads its environment: the settings, and the stack file a second terminal joins.
SETTINGS_MODULES = [ROOT / "config" / "settings.py", ROOT / "config" / "stack.py"]
ENV_READERS = {"str", "int", "float", "bool", "list", "path", "json", "dict", "url", "db", "cache"}
VARIABLE = re.compile(r"`([A-Z][A-Z0-9_]*[A-Z0-9])`")


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _reads_environment(function: ast.expr) -> bool:
    """Return whether a call of `function` reads a variable: env(...), env.str(...), os.environ.get(...)."""
    if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name) and function.value.id == "env":
        return function.attr in ENV_READERS
    return ast.unparse(function) in ("env", "os.getenv", "os.environ.get", "environ.get")


def variables_read(path: Path) -> set[str]:
    """Return the names of the environment variables a module reads with literal names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and node.args and _reads_environment(node.func):
            name = _literal(node.args[0])
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "environ"):
            name = _literal(node.slice)
        else:
            continue
        if name:
            names.add(name)
    return names


def documented_rows(text: str) -> list[str]:
    """Return the variable each table row of the configuration page defines, in order."""
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if cells and not set(cells[0]) <= set("-: "):
            rows.extend(VARIABLE.findall(cells[0]))
    return rows


def test_the_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move the details into docs/"


def test_the_readme_names_the_two_commands():
    text = README.read_text()
    assert "make run" in text
    assert "make test" in text


def test_the_readme_links_only_to_files_that_exist():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert local
    assert [link for link in local if not (ROOT / link).exists()] == []


def test_the_parser_finds_what_the_settings_read():
    names = variables_read(ROOT / "config" / "settings.py")
    assert {"DATABASE_URL", "DJANGO_DEBUG", "CACHE_URL", "EXECUTION_MAX_RESULT_BYTES"} <= names
    assert "DEVSTACK_HOME" in variables_read(ROOT / "config" / "stack.py")


def test_every_variable_the_settings_read_is_documented():
    documented = set(documented_rows(CONFIGURATION.read_text()))
    read = set().union(*(variables_read(path) for path in SETTINGS_MODULES))
    missing = sorted(read - documented)
    assert missing == [], f"add these to a table of docs/configuration.md: {missing}"


def test_every_variable_is_documented_once():
    rows = documented_rows(CONFIGURATION.read_text())
    assert rows
    assert sorted({name for name in rows if rows.count(name) > 1}) == []


def test_every_documented_variable_is_read_somewhere():
    """A variable nothing reads any more is a stale line of the docs."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # The code, the Makefile, the Procfile and the deployment files; not the docs, nor the tests.
    sources = "\n".join(
        (ROOT / name).read_text(errors="replace")
        for name in files
        if not name.startswith(("docs/", "tests/"))
        and (ROOT / name).suffix in {".py", ".yml", ".yaml", ".toml", ""}
        and (ROOT / name).is_file()
    )
    stale = sorted(name for name in set(documented_rows(CONFIGURATION.read_text())) if name not in sources)
    assert stale == [], f"nothing reads these any more: {stale}"
