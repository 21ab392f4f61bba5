"""What the browser tests need, where it is, and what to do without it: skip, or fail under CI (CI=true)."""

import importlib.util
import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def missing_requirement() -> str:
    """Return what the browser tests lack on this machine, or "" when they can run."""
    if not CHROMIUM.exists():
        return f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed"
    return ""


def in_ci() -> bool:
    """Return whether this is a CI run, where a browser test that cannot run is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")
