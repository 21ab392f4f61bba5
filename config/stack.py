"""Join the `make run` stack of this project folder from a second terminal: its variables, read from `.devstack/`."""

import fcntl
import json
import os
import sys
from pathlib import Path

# scripts/devstack.py writes these two files while `make run` runs (and holds the lock).
STACK_FILE = "stack.json"
LOCK_FILE = "stack.lock"
# Either of these set means the process was pointed at some servers on purpose.
SERVER_VARIABLES = ("DATABASE_URL", "CELERY_BROKER_URL")


def stack_home(base_dir: Path) -> Path:
    """Return the folder `make run` keeps its data and its stack file in (DEVSTACK_HOME, default `.devstack/`)."""
    return Path(os.environ.get("DEVSTACK_HOME") or base_dir / ".devstack")


def running_stack(home: Path) -> dict[str, str] | None:
    """Return the variables the `make run` stack in `home` runs with, or None when none runs there.

    The stack holds an exclusive lock on its lock file for as long as it runs; the kernel
    drops it when the process dies, so a stack file left by a killed run is not believed.
    """
    try:
        with (home / LOCK_FILE).open("rb") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return dict(json.loads((home / STACK_FILE).read_text())["environment"])
            fcntl.flock(lock, fcntl.LOCK_UN)
            return None
    except (OSError, ValueError, KeyError):
        return None


def join_running_stack(base_dir: Path) -> bool:
    """Fill the unset variables from the running `make run` stack; return whether one was found.

    Only a process given neither DATABASE_URL nor CELERY_BROKER_URL joins, and variables set
    explicitly always win. Test runs never join: they start servers of their own (`make test`),
    and must not purge the queues of a stack someone is using.
    """
    if any(os.environ.get(name) for name in SERVER_VARIABLES) or "pytest" in sys.modules:
        return False
    variables = running_stack(stack_home(base_dir))
    if variables is None:
        return False
    for name, value in variables.items():
        os.environ.setdefault(name, value)
    return True


def nothing_running(base_dir: Path) -> str:
    """Return the one line a command prints when it was given no configuration and no stack runs."""
    return (
        f"Nothing is running in {base_dir}: start the stack with `make run` there "
        "(or set DATABASE_URL, CELERY_BROKER_URL and DJANGO_SECRET_KEY)."
    )
