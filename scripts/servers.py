"""Local PostgreSQL and Redis servers on free ports, each with a password of its own.

Where their programs come from: scripts/server_programs.py.

Both listen on 127.0.0.1 only (PostgreSQL also on a unix socket in its private folder), and both
ask for a password generated for each server: another user of the machine reaches neither.
Passwords never appear on a command line (`ps` shows command lines to every user): PostgreSQL
reads its password from a file at initdb, Redis its settings from a file only its owner reads.

Each server is an object that can be stopped and started again on the same data, port and
password (the fault tests restart them), with context managers for the usual start-use-stop.
Standard ports are never used: free ones are picked below the kernel's ephemeral range, so an
outgoing connection cannot take a port between the moment it is picked and the moment a server binds it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

from scripts.server_programs import MissingServer, postgres_bin, redis_program

__all__ = [
    "MissingServer",
    "PostgresServer",
    "RedisServer",
    "free_port",
    "new_password",
    "port_is_free",
    "postgres_server",
    "redis_server",
    "stop",
]

DATABASE_NAME = "plans"
# PostgreSQL refuses to run as root: as root, it runs as this user (the name the pgserver wheel
# used, so databases kept by earlier runs of `make run` still belong to it).
PG_SYSTEM_USER = "pgserver"
HBA = (
    "# Written by scripts/servers.py: every connection needs the password.\n"
    "local all all scram-sha-256\n"
    "host all all 127.0.0.1/32 scram-sha-256\n"
    "host all all ::1/128 scram-sha-256\n"
)


# Ports a server of this kind may have taken although nothing listens on them at this moment.
WELL_KNOWN = frozenset({3000, 5432, 5555, 5672, 6379, 8000, 8080, 8888, 9000, 15672, 25672, 27017})
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing uses now, outside the range outgoing connections take theirs from.

    A port the kernel hands out for bind(0) comes from the ephemeral range, and so may be taken by any
    outgoing connection (to PostgreSQL, Redis, ...) before the server it was picked for binds it.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    if low > 12000:
        candidates = secrets.SystemRandom().sample(range(low - 10000, low), 200)
        for port in candidates:
            if port not in WELL_KNOWN and port_is_free(port):
                return port
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


def new_password() -> str:
    return secrets.token_urlsafe(24)


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


def _reachable_by_others(path: Path) -> None:
    """Let another user traverse every folder above `path` (PostgreSQL's user, when run as root)."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


def _system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True, capture_output=True)  # nosec B603 B607
        return pwd.getpwnam(name)


# --- the servers ----------------------------------------------------------------------------


class PostgresServer:
    """PostgreSQL on one data directory, port and password, which can be stopped and started again.

    With `data`, the database lives there and outlives the run (it is created on first use,
    and durable; its password must then be kept too); without, it lives in `workdir` and is
    thrown away, so durability is traded for speed.
    """

    def __init__(
        self, workdir: Path, data: Path | None = None, port: int | None = None, password: str | None = None
    ) -> None:
        self.workdir = workdir
        self.kept = data is not None
        self.bin_dir = postgres_bin()
        self.data, self.log = data or workdir / "pgdata", workdir / "postgres.log"
        self.port = port or free_port()
        self.password = password or new_password()
        self.process: subprocess.Popen | None = None
        # As root, it runs as PG_SYSTEM_USER.
        self._user: int | None = None
        self._group: int | None = None

    def _url(self, database: str, password: str | None) -> str:
        login = f"postgres:{quote(password, safe='')}" if password is not None else "postgres"
        return f"postgresql://{login}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self._url(DATABASE_NAME, self.password)

    @property
    def admin_url(self) -> str:
        return self._url("postgres", self.password)

    def create(self) -> None:
        """Make the data directory unless it holds a database already, start the server, create the database."""
        import psycopg

        fresh = not (self.data / "PG_VERSION").exists()
        if fresh and self.data.exists():
            shutil.rmtree(self.data)  # an initdb that never finished
        self.data.mkdir(parents=True, exist_ok=True)
        self._own_folders()
        if fresh:
            self._initdb()
        elif "trust" in self._hba_methods():
            self._require_password()  # made by an earlier version, which trusted every local user
        self.start()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone():
                conn.execute(f"CREATE DATABASE {DATABASE_NAME}")

    def _initdb(self) -> None:
        password_file = self.workdir / "pgpass.tmp"
        with os.fdopen(os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
            file.write(self.password + "\n")
        if self._user is not None:
            os.chown(password_file, self._user, self._group or -1)
        try:
            initdb = subprocess.run(
                [
                    str(self.bin_dir / "initdb"),
                    *("-D", str(self.data), "-U", "postgres", "--encoding=utf8"),
                    *("--auth=scram-sha-256", f"--pwfile={password_file}"),
                ]
                + ([] if self.kept else ["--no-sync"]),
                capture_output=True,
                text=True,
                user=self._user,
                group=self._group,
            )
        finally:
            password_file.unlink(missing_ok=True)
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed in {self.data}:\n{initdb.stdout}{initdb.stderr}")
        self._write_hba()

    def _hba_methods(self) -> set[str]:
        lines = (self.data / "pg_hba.conf").read_text().splitlines()
        return {line.split()[-1] for line in lines if line.strip() and not line.lstrip().startswith("#")}

    def _write_hba(self) -> None:
        (self.data / "pg_hba.conf").write_text(HBA)

    def _require_password(self) -> None:
        """Give the superuser this server's password, then ask every connection for it."""
        import psycopg
        from psycopg import sql

        self.start()
        try:
            with psycopg.connect(self._url("postgres", None), autocommit=True) as conn:
                conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(self.password))
        finally:
            self.stop()
        self._write_hba()

    def _own_folders(self) -> None:
        if os.geteuid() != 0:
            return
        entry = _system_user(PG_SYSTEM_USER)
        _reachable_by_others(self.bin_dir)
        _reachable_by_others(self.data.parent)
        _reachable_by_others(self.workdir.parent)
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
            except psycopg.OperationalError as error:
                if "password authentication failed" in str(error) and "trust" not in self._hba_methods():
                    raise RuntimeError(
                        f"PostgreSQL in {self.data} does not take the password kept for it; "
                        "`make wipe` deletes the database and starts afresh."
                    ) from None
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
    """Redis (or Valkey) on one port and password, without persistence: a restart loses every key."""

    def __init__(self, workdir: Path, port: int | None = None, password: str | None = None) -> None:
        import redis

        self.workdir = workdir
        self.program = redis_program()
        self.port, self.log = port or free_port(), workdir / "redis.log"
        self.password = password or new_password()
        self.url = f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"
        self.client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=1)
        self.process: subprocess.Popen | None = None

    def _write_config(self) -> Path:
        """Write the server's settings, its password among them, to a file only this user reads."""
        path = self.workdir / "redis.conf"
        settings = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "requirepass": self.password,
            "save": '""',
            "appendonly": "no",
            "dir": str(self.workdir),
            "logfile": str(self.log),
            # Queues must never be evicted.
            "maxmemory-policy": "noeviction",
        }
        path.unlink(missing_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.writelines(f"{name} {value}\n" for name, value in settings.items())
        return path

    def start(self) -> None:
        """Start the server; return once it answers."""
        import redis

        config = self._write_config()
        self.log.touch()
        self.process = subprocess.Popen(
            [str(self.program), str(config)],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )

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
def postgres_server(workdir: Path, data: Path | None = None, password: str | None = None) -> Iterator[PostgresServer]:
    """Start PostgreSQL on a free port and yield it (see PostgresServer for `data` and `password`)."""
    server = PostgresServer(workdir, data, password=password)
    try:
        server.create()
        yield server
    finally:
        server.stop()  # PostgreSQL's "fast" shutdown


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    """Start Redis on a free port and yield it."""
    server = RedisServer(workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
