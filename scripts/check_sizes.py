"""Fail where the code is not cut along concepts: a module past ~600 lines, a function past 60, a package of one module.

Modules are cut along concepts, not line counts: one concept (how a run goes, how a plan
moves) is one module a reader opens, fine up to about 600 lines; a function past 60 lines
usually hides two; and a package is worth its folder only when it holds several concepts,
so one with fewer than two modules of its own should be a module. Migrations, tests and
the folders Django names (management/commands, templatetags) are left out of the package
rule.

python scripts/check_sizes.py          # what `make lint` runs
"""

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
MIN_PACKAGE_MODULES = 2
# Folders whose shape Django or pytest decides, not the code's concepts.
CONVENTIONAL = ("migrations", "management", "commands", "templatetags")


def project_modules() -> list[Path]:
    """Return the Python files git tracks or would track (not ignored), migrations aside."""
    listed = subprocess.run(  # nosec
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in sorted(set(listed)) if "/migrations/" not in name and (ROOT / name).exists()]


def problems(path: Path) -> list[str]:
    """Return what is too long in one module."""
    text = path.read_text(encoding="utf-8")
    name = path.relative_to(ROOT)
    found = []
    lines = len(text.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES}): does it hold two concepts?")
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - first + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.lineno}: {node.name}() is {length} lines (at most {MAX_FUNCTION_LINES})")
    return found


def package_problems(modules: list[Path]) -> list[str]:
    """Return the packages (outside the tests and Django's folders) that hold fewer than two modules of their own."""
    own: dict[Path, int] = defaultdict(int)
    packages = set()
    for path in modules:
        relative = path.relative_to(ROOT)
        if relative.parts[0] == "tests" or any(part in CONVENTIONAL for part in relative.parts[:-1]):
            continue
        if path.name == "__init__.py":
            packages.add(relative.parent)
        else:
            own[relative.parent] += 1
    return [
        f"{package}/: a package of {own[package]} module(s): make it a module, or let it hold several concepts"
        for package in sorted(packages)
        if package != Path(".") and own[package] < MIN_PACKAGE_MODULES
    ]


def main() -> int:
    modules = project_modules()
    found = [problem for path in modules for problem in problems(path)] + package_problems(modules)
    for problem in found:
        print(problem)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
