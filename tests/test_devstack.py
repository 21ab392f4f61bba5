"""`make run` and a second terminal: the stack is reachable with nothing set, and its data outlive a restart."""

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from scripts.processes import ROOT

# Processes of its own (`make run`'s stack, and commands in terminals of their own): not in make test-fast.
pytestmark = pytest.mark.processes

# What the settings read: a second terminal has none of it set.
CONFIGURATION = re.compile(r"^(DATABASE_|CELERY_|DJANGO_|EXECUTION_|APPROVALS_|PLANS_|API_|WEBHOOK_|FLOWER_|DEVSTACK_)")
VENV_BIN = Path(sys.executable).parent


def second_terminal(home: Path) -> dict[str, str]:
    """The environment of a fresh terminal in the project folder (DEVSTACK_HOME stands in for `.devstack/`)."""
    env = {name: value for name, value in os.environ.items() if not CONFIGURATION.match(name)}
    env.pop("PORT", None)
    return {**env, "DEVSTACK_HOME": str(home), "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"}


def command(home: Path, *args: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(args), cwd=ROOT, env={**second_terminal(home), **extra}, capture_output=True, text=True, timeout=timeout
    )


def manage(home: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return command(home, str(VENV_BIN / "python"), "manage.py", *args, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    """`scripts/devstack.py run`, as `make run` starts it, with its data in `home`."""

    def __init__(self, home: Path, log: Path) -> None:
        self.home, self.log = home, log
        self.web, self.flower = free_port(), free_port()
        env = {
            **second_terminal(home),
            "PORT": str(self.web),
            "FLOWER_PORT": str(self.flower),
            # Not the project's own staticfiles/.
            "DJANGO_STATIC_ROOT": str(home.parent / "static"),
        }
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "scripts/devstack.py", "run"],
                cwd=ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{self.web}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"make run exited:\n{self.output()[-4000:]}"
            try:
                if requests.get(f"{self.url}/admin/login/", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"make run did not serve within {timeout}s:\n{self.output()[-4000:]}")

    def interrupt(self) -> int:
        """Ctrl-C: everything stops, the servers last; the exit status is 130, as for any interrupted program."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(45)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def stacks(tmp_path) -> Iterator[list[Stack]]:
    started: list[Stack] = []
    yield started
    for stack in started:
        if stack.process.poll() is None:
            stack.interrupt()


@pytest.mark.slow
def test_a_second_terminal_reaches_the_stack_and_a_restart_keeps_plans_and_password(tmp_path, stacks):
    home = tmp_path / "devstack"
    stacks.append(first := Stack(home, tmp_path / "run-1.log"))
    first.wait_ready()
    password = re.search(r"user 'admin', password '([^']+)'", first.output())
    assert password, first.output()[-3000:]
    admin = ("admin", password.group(1))

    submitted = manage(home, "plans", "submit", "examples/hello.json", "--approve", "--watch", "--no-input")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    plan_id = re.search(r"Submitted plan ([0-9a-f-]{36})", submitted.stdout).group(1)  # type: ignore[union-attr]
    assert "completed" in submitted.stdout
    active = command(home, str(VENV_BIN / "celery"), "-A", "config", "inspect", "active")
    assert active.returncode == 0, active.stdout + active.stderr
    assert "subtasks@" in active.stdout
    assert "control@" in active.stdout

    # Flower answers on 127.0.0.1 only, to the admin's user and password, its HTTP API included.
    flower = f"http://127.0.0.1:{first.flower}"
    assert requests.get(f"{flower}/", timeout=10).status_code == 401
    assert requests.get(f"{flower}/", auth=admin, timeout=10).status_code == 200
    assert requests.get(f"{flower}/api/workers", auth=admin, timeout=10).status_code == 200

    assert first.interrupt() == 130
    assert not (home / "stack.json").exists()
    stopped = manage(home, "plans", "status", plan_id)
    assert stopped.returncode == 1
    assert stopped.stdout == ""
    assert stopped.stderr.strip().splitlines() == [
        f"Nothing is running in {ROOT}: start the stack with `make run` there "
        "(or set DATABASE_URL, CELERY_BROKER_URL and DJANGO_SECRET_KEY)."
    ]

    stacks.append(second := Stack(home, tmp_path / "run-2.log"))
    second.wait_ready()
    assert f"password '{admin[1]}'" in second.output()
    status = manage(home, "plans", "status", plan_id)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "completed" in status.stdout
    token = requests.post(
        f"{second.url}/api/v1/auth/token/", json={"username": admin[0], "password": admin[1]}, timeout=10
    )
    assert token.status_code == 200, token.text
    assert second.interrupt() == 130


@pytest.fixture
def home(tmp_path) -> Path:
    home = tmp_path / "devstack"
    home.mkdir()
    return home


def announce(home: Path, **environment: str) -> None:
    (home / "stack.json").write_text(json.dumps({"pid": os.getpid(), "environment": environment}))


SHOW_SETTINGS = "from django.conf import settings as s; print(s.DATABASES['default']['PORT'], s.CELERY_BROKER_URL)"
RECORDED = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:1111/plans",
    "CELERY_BROKER_URL": "redis://127.0.0.1:2222/0",
    "DJANGO_SECRET_KEY": "recorded-by-make-run",
}


def test_with_nothing_running_and_nothing_set_a_command_says_so_in_one_line(home):
    announce(home, **RECORDED)  # left behind by a run that was killed: nobody holds its lock

    for args in (["manage.py", "check"], ["-m", "celery", "-A", "config", "inspect", "active"]):
        result = command(home, sys.executable, *args)
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"Nothing is running in {ROOT}: start the stack with `make run` there "
            "(or set DATABASE_URL, CELERY_BROKER_URL and DJANGO_SECRET_KEY)."
        ]


def test_a_running_stack_fills_in_what_is_unset_and_explicit_variables_win(home):
    announce(home, **RECORDED)
    with (home / "stack.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as the running `make run` holds it

        joined = manage(home, "shell", "-v", "0", "-c", SHOW_SETTINGS)
        assert joined.stdout.split() == ["1111", "redis://127.0.0.1:2222/0"], joined.stderr
        # A terminal pointed at other servers does not join at all.
        elsewhere = manage(
            home, "shell", "-v", "0", "-c", SHOW_SETTINGS, DATABASE_URL="postgresql://db:3333/x", DJANGO_SECRET_KEY="k"
        )
        assert elsewhere.stdout.split() == ["3333", "redis://127.0.0.1:6379/0"], elsewhere.stderr


def test_commands_given_their_own_secret_key_work_without_a_stack(home):
    # As `make lint` runs mypy, which loads the settings with DJANGO_SECRET_KEY=lint.
    result = manage(home, "shell", "-v", "0", "-c", SHOW_SETTINGS, DJANGO_SECRET_KEY="lint")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["5432", "redis://127.0.0.1:6379/0"]
