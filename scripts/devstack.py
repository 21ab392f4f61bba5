"""Run a command, or the whole stack, with local PostgreSQL and Redis when none is configured.

    python scripts/devstack.py exec -- pytest -q   # what `make test` does
    python scripts/devstack.py run                  # what `make run` does
    python scripts/devstack.py wipe                 # what `make wipe` does

When DATABASE_URL is unset, a PostgreSQL server is started on a free port; when
CELERY_BROKER_URL is unset, a Redis server likewise (scripts/servers.py says where their
programs come from). Each has a password of its own and listens on 127.0.0.1 only. Standard
ports are never used: the operating system picks free ones.

`exec` throws both away when the command exits. `run` keeps PostgreSQL's data and password,
the admin's password and the secret key in DEVSTACK_HOME (default `.devstack/` in the project,
which git ignores) so the next run finds them; `wipe` deletes that folder. While `run` runs, it
records the variables its processes use in DEVSTACK_HOME/stack.json (readable by its owner
only), which the settings read in a second terminal (config/stack.py). Redis stays throwaway:
PostgreSQL is the source of truth and the reconciler re-sends whatever the broker lost. The
admin's password reaches no process but `createsuperuser` and Flower (through a file only its
owner reads): the stack's processes do not carry it in their environment.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script (python scripts/devstack.py): the project is importable
    sys.path.insert(0, str(ROOT))

from scripts.servers import (  # noqa: E402
    MissingServer,
    PostgresServer,
    RedisServer,
    free_port,
    new_password,
    port_is_free,
    postgres_server,
    redis_server,
    stop,
)

__all__ = ["PostgresServer", "RedisServer", "free_port", "port_is_free", "postgres_server", "redis_server", "stop"]

# config/stack.py reads the same names: where `make run` keeps its data and announces itself.
STACK_FILE, LOCK_FILE, SECRETS_FILE = "stack.json", "stack.lock", "secrets.json"
# The variables the settings read; a second terminal gets these from stack.json.
SETTINGS_PREFIXES = (
    "DATABASE_",
    "CELERY_",
    "DJANGO_",
    "EXECUTION_",
    "APPROVALS_",
    "PLANS_",
    "API_",
    "WEBHOOK_",
    "CACHE_URL",
    "FLOWER_URL",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "HEALTH_",
    "METRICS_",
    "OTEL_",
)
NOT_SHARED = ("DJANGO_SUPERUSER_", "CELERY_BEAT_SCHEDULE_FILE")
# What the stack's processes never get in their environment: the admin's password (Flower reads
# its own copy from a file).
NOT_PASSED_ON = ("DJANGO_SUPERUSER_PASSWORD", "FLOWER_BASIC_AUTH")


def stack_home() -> Path:
    return Path(os.environ.get("DEVSTACK_HOME") or ROOT / ".devstack")


@contextlib.contextmanager
def services(  # nosec B107
    data: Path | None = None, secret_key: str = "", postgres_password: str | None = None
) -> Iterator[dict[str, str]]:
    """Yield the environment for the app: the configured services, or local ones.

    A local PostgreSQL keeps its files in `data` when given (make run, with the password kept
    for it), else in a temporary folder removed at exit, as Redis's always are.
    """
    env = dict(os.environ)
    env.setdefault("DJANGO_SECRET_KEY", secret_key or secrets.token_urlsafe(50))
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="devstack-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        if not env.get("DATABASE_URL"):
            postgres = stack.enter_context(postgres_server(workdir, data, password=postgres_password))
            env["DATABASE_URL"] = postgres.url
            print(f"devstack: PostgreSQL on 127.0.0.1:{postgres.port} ({postgres.bin_dir})", flush=True)
        if not env.get("CELERY_BROKER_URL"):
            redis = stack.enter_context(redis_server(workdir))
            env["CELERY_BROKER_URL"] = redis.url
            print(f"devstack: Redis on 127.0.0.1:{redis.port} ({redis.program})", flush=True)
        env["DEVSTACK_DIR"] = str(workdir)
        yield env


@contextlib.contextmanager
def stack_lock(home: Path) -> Iterator[None]:
    """Hold the stack's lock while the stack runs: one `make run` per folder, and a sign of life.

    The kernel releases the lock when this process ends, however it ends, so a second
    terminal never mistakes a stack file left by a killed run for a running stack.
    """
    home.mkdir(parents=True, exist_ok=True)
    path = home / LOCK_FILE
    lock = path.open("a")
    try:
        for _ in range(40):  # a second terminal checking the lock holds it for an instant
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.05)
        else:
            raise SystemExit(f"devstack: `make run` is already running in {home}; stop it first (Ctrl-C there).")
        try:
            yield
        finally:
            (home / STACK_FILE).unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                home.rmdir()  # only when empty: nothing was kept
    finally:
        lock.close()


def write_private(path: Path, data: dict) -> None:
    """Write JSON readable by this user only (it holds passwords), replacing the file at once."""
    part = path.with_suffix(".part")
    part.unlink(missing_ok=True)
    with os.fdopen(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        json.dump(data, file, indent=2)
    part.replace(path)


def shared_environment(env: dict[str, str]) -> dict[str, str]:
    """Return the variables of the stack's processes that a second terminal needs to reach the stack."""
    return {
        name: value
        for name, value in sorted(env.items())
        if name.startswith(SETTINGS_PREFIXES) and not name.startswith(NOT_SHARED)
    }


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


def run(home: Path) -> int:
    """`make run`: the stack, with its database, admin password and secret key kept in `home`.

    With DATABASE_URL set the database is elsewhere and nothing is kept; either way a second
    terminal finds the running stack through `home`/stack.json.
    """
    with stack_lock(home):
        saved: dict[str, str] | None = None
        if not os.environ.get("DATABASE_URL"):
            path = home / SECRETS_FILE
            saved = json.loads(path.read_text()) if path.exists() else {}
            if not saved.get("DJANGO_SECRET_KEY") or not saved.get("postgres_password"):
                # Kept, so sessions and signed links survive a restart, and the kept database opens.
                saved.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
                saved.setdefault("postgres_password", new_password())
                write_private(path, saved)
        data = home / "pgdata" if saved is not None else None
        kept = saved or {}
        with services(
            data, secret_key=kept.get("DJANGO_SECRET_KEY", ""), postgres_password=kept.get("postgres_password")
        ) as env:
            return serve(env, home, saved)


def admin_create(
    env: dict[str, str], home: Path, saved: dict[str, str] | None, *, username: str, password: str
) -> bool:
    """Create the admin user (keeping its password with the data); return whether it was created now."""
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
    if created.returncode == 0 and saved is not None:
        saved["admin_password"] = password
        write_private(home / SECRETS_FILE, saved)
    elif created.returncode != 0 and "already taken" not in created.stderr:
        print(f"devstack: could not create the admin user: {created.stderr.strip()}", flush=True)
    return created.returncode == 0


def serve(env: dict[str, str], home: Path, saved: dict[str, str] | None) -> int:
    """Prepare the database and an admin user, then run web, workers, beat and Flower.

    `saved` holds what is kept between runs (None when nothing is): the admin's password is
    made once and then printed at each start.
    """
    # The passwords given go to createsuperuser and Flower only, not into every process.
    given_password, given_flower_auth = (env.pop(name, "") for name in NOT_PASSED_ON)
    manage(env, "migrate", "--noinput", check=True)
    manage(env, "collectstatic", "--noinput", "--verbosity", "0", check=True)
    username = env.get("DJANGO_SUPERUSER_USERNAME", "admin")
    stored = (saved or {}).get("admin_password")
    password = given_password or stored or secrets.token_urlsafe(12)
    created = admin_create(env, home, saved, username=username, password=password)
    known = created or password == stored
    web_port = int(env.get("PORT") or (8000 if port_is_free(8000) else free_port()))
    flower_port = int(env.get("FLOWER_PORT") or (5555 if port_is_free(5555) else free_port()))
    env.update(
        PORT=str(web_port),
        FLOWER_PORT=str(flower_port),
        FLOWER_URL=env.get("FLOWER_URL") or f"http://127.0.0.1:{flower_port}/",
        CELERY_BEAT_SCHEDULE_FILE=str(Path(env["DEVSTACK_DIR"]) / "celerybeat-schedule"),
        PYTHONUNBUFFERED="1",
    )
    # Flower can revoke tasks and stop workers, and 127.0.0.1 is shared by every local user:
    # it asks for the admin's user and password (Flower's own basic auth), which it reads from
    # a file of its own, so that no other process of the stack holds the password.
    flower_auth = given_flower_auth or f"{username}:{password}"
    env["FLOWER_CONF"] = str(flower_config(Path(env["DEVSTACK_DIR"]), flower_auth))
    write_private(home / STACK_FILE, {"pid": os.getpid(), "environment": shared_environment(env)})

    if known:
        login = f"user {username!r}, password {password!r}"
    else:
        login = f"user {username!r} already exists; its password is unchanged"
    flower_user, _, flower_password = flower_auth.partition(":")
    flower_login = (
        "the same user and password"
        if known and flower_auth == f"{username}:{password}"
        else f"user {flower_user!r}, password {flower_password!r}"
    )
    kept = f"kept in {home}/ between runs; `make wipe` deletes it" if saved is not None else "DATABASE_URL's server"
    print(
        "\n"
        f"  Admin:     http://127.0.0.1:{web_port}/admin/   ({login})\n"
        f"  API:       http://127.0.0.1:{web_port}/api/v1/   (docs: /api/v1/docs/)\n"
        f"  Flower:    http://127.0.0.1:{flower_port}/   ({flower_login})\n"
        f"  Data:      {kept}\n"
        "  Another terminal in this folder reaches this stack, for instance:\n"
        "    .venv/bin/python manage.py plans submit examples/hello.json --approve --watch\n"
        "    .venv/bin/celery -A config inspect active\n"
        "  Ctrl-C stops everything.\n",
        flush=True,
    )
    honcho = [sys.executable, "-m", "honcho", "start", "-f", str(ROOT / "Procfile"), "-d", str(ROOT)]
    return run_child(honcho, env)


def flower_config(folder: Path, basic_auth: str) -> Path:
    """Write Flower's configuration file (its basic auth), readable by this user only; return its path."""
    path = folder / "flowerconfig.py"
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        file.write(f"basic_auth = {basic_auth.split(',')!r}\n")
    return path


def wipe(home: Path) -> int:
    """`make wipe`: delete what `make run` keeps (the database, the admin's password, the secret key)."""
    if not home.exists():
        print(f"devstack: nothing to wipe ({home} does not exist).")
        return 0
    with stack_lock(home):
        for entry in home.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.name != LOCK_FILE:
                entry.unlink()
    print(f"devstack: wiped {home} (database, admin password, secret key); the next `make run` starts afresh.")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("run", help="run the whole stack (web, workers, beat, Flower), keeping its database")
    sub.add_parser("wipe", help="delete the database and credentials `run` keeps")
    exec_parser = sub.add_parser("exec", help="run a command with throwaway services' variables set")
    exec_parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    try:
        if args.mode == "run":
            return run(stack_home())
        if args.mode == "wipe":
            return wipe(stack_home())
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("exec needs a command")
        with services() as env:
            return run_child(command, env)
    except MissingServer as error:
        print(f"devstack: {error}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
