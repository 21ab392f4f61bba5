"""Run a stdio MCP server so that it never outlives the worker process that started it.

    python -I -S mcp_guard.py COMMAND [ARGS...]

The worker starts every stdio server through this script (the `mcp` SDK has already made
it the leader of a process group of its own). It runs the command as its child, in that
group, with stdin, stdout and stderr passed through, and exits with the command's status
once the command has exited (stopping what it left running in the group).
When the worker process goes away, however it goes (a SIGKILL included), the guard is told
at once by the kernel (PR_SET_PDEATHSIG, on Linux) or within a second by its parent's pid
changing (elsewhere), and stops the whole group: the server and anything it started.
A SIGTERM, SIGINT or SIGHUP sent to the guard stops the group the same way.

Standard library only, and nothing of the project: it runs as `python -I -S`, before and
apart from Django.
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
# How long the server has to exit after SIGTERM before the group is killed.
GRACE_S = 2.0
POLL_S = 0.5


def _die_with_parent() -> bool:
    """Ask the kernel for a SIGTERM when the parent exits (Linux); return whether it will send one."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        # The symbols of the running program include the C library's prctl.
        return ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) == 0
    return False


def _stop_group(child: subprocess.Popen) -> None:
    """SIGTERM the whole process group, then SIGKILL what is left of it after the grace period."""
    group = os.getpgrp()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's SIGTERM reaches the guard too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)  # the guard too: nothing of the group is left


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: mcp_guard.py COMMAND [ARGS...]", file=sys.stderr)
        return 2
    parent = os.getppid()
    # Told by the kernel, the guard waits for the server without polling, so it follows a
    # server that exits at once: its end is how the worker learns of the server's.
    poll = None if _die_with_parent() else POLL_S
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _raise_stop)
    if os.getppid() != parent:  # the parent died before the kernel was asked to tell us
        return 1
    try:
        child = subprocess.Popen(argv)
    except OSError as error:
        print(f"mcp_guard: cannot start {argv[0]!r}: {error.strerror}", file=sys.stderr)
        return 127
    try:
        while True:
            try:
                status = child.wait(poll)
                break
            except subprocess.TimeoutExpired:
                if os.getppid() != parent:
                    raise _Stop from None
    except _Stop:
        _stop_group(child)
        return 1
    # The server is gone: so is anything it left behind in the group.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(os.getpgrp(), signal.SIGTERM)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
