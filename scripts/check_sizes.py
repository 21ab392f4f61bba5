"""Fail when a module of the project passes 400 lines or a function 60 (migrations aside): split it.

python scripts/check_sizes.py          # what `make lint` runs
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


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
        found.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - first + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.lineno}: {node.name}() is {length} lines (at most {MAX_FUNCTION_LINES})")
    return found


def main() -> int:
    found = [problem for path in project_modules() for problem in problems(path)]
    for problem in found:
        print(problem)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
