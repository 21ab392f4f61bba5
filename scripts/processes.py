"""The service's processes as users run them, for the tests and the benchmarks: Celery workers and beat, uvicorn."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
from django.db import connection

from scripts.servers import free_port
from scripts.servers import stop as stop_process

ROOT = Path(__file__).resolve().parents[1]


class Worker:
    """A `celery -A config ...` process (or of another app, from another folder) in its own process group.

    `wrapper` is a command it runs under, such as `ip netns exec NAME` (one that execs it, keeping its pid).
    """

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log_dir: Path,
        queues: tuple[str, ...] = (),
        *,
        app: str = "config",
        cwd: Path = ROOT,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.app, self.cwd = app, cwd
        self.wrapper = tuple(wrapper)
        self.queues = queues
        self.hostname = f"{name}@{socket.gethostname()}"
        self.log = log_dir / f"{name}.log"
        self.args, self.env = args, env
        self.process = self._start()

    def _start(self) -> subprocess.Popen:
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [*self.wrapper, sys.executable, "-m", "celery", "-A", self.app, *self.args],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def restart(self) -> None:
        """Start the same worker again (same name, queues and log), once the previous process has gone."""
        self.stop()
        self.process = self._start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal_group(self, signum: int) -> None:
        os.killpg(self.pid, signum)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.signal_group(signal.SIGCONT)
            self.signal_group(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.process.wait()

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class WebServer:
    """The ASGI app under uvicorn, as users run it, on a free port."""

    APPLICATION_NAME = "web-under-test"

    def __init__(self, env: dict[str, str], log_dir: Path, args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / "web.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "config.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *args,
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"uvicorn did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        stop_process(self.process, signal.SIGTERM)

    @classmethod
    @contextlib.contextmanager
    def running(cls, env: dict[str, str], log_dir: Path) -> Iterator["WebServer"]:
        """Start uvicorn, yield it once it accepts connections, stop it afterwards."""
        server = cls(env, log_dir)
        try:
            server.wait_ready()
            yield server
        finally:
            server.stop()


def current_database_url() -> str:
    """Return a libpq URL of the database Django uses now (the test database in tests)."""
    params = connection.get_connection_params()
    keys = {"host", "port", "user", "password", "dbname"}
    return psycopg.conninfo.make_conninfo(**{key: value for key, value in params.items() if key in keys and value})
