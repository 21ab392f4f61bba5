"""The browser tests without a browser: skipped on a developer's machine, failed under CI (CI=true)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Processes of its own (each test runs a pytest session of its own): not in make test-fast.
pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parent.parent


def run_browser_tests(**env: str) -> subprocess.CompletedProcess:
    """Run tests/browser in a fresh pytest with Chromium looked for where it is not."""
    clean = {key: value for key, value in os.environ.items() if key != "CI"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests/browser", "-q", "-p", "no:cacheprovider", "-rA"],
        cwd=ROOT,
        env={**clean, "CHROMIUM_PATH": "/nonexistent/chromium", **env},
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_without_chromium_the_browser_tests_skip_on_a_developers_machine():
    result = run_browser_tests()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped" in result.stdout
    assert "Chromium is not installed at /nonexistent/chromium" in result.stdout


def test_without_chromium_the_browser_tests_fail_under_ci():
    result = run_browser_tests(CI="true")
    assert result.returncode == 1, result.stdout + result.stderr
    assert " error" in result.stdout
    assert "CI=true, so the browser tests must run, not skip" in result.stdout
