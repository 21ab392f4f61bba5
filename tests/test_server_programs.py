"""Where local servers come from: a named program, a wheel, then the system; else one line saying what to install."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import server_programs
from scripts.processes import ROOT
from scripts.server_programs import MissingServer, postgres_bin, redis_program


@pytest.fixture
def bare_machine(monkeypatch, tmp_path):
    """No wheel, nothing on the PATH, no Debian PostgreSQL."""
    monkeypatch.setattr(server_programs, "_package_dir", lambda name: None)
    monkeypatch.setattr(server_programs.shutil, "which", lambda name: None)
    monkeypatch.setattr(server_programs, "DEBIAN_POSTGRES", tmp_path / "none")
    monkeypatch.delenv("PG_BIN", raising=False)
    monkeypatch.delenv("REDIS_SERVER", raising=False)


def test_with_nothing_to_run_each_server_says_in_one_line_what_to_install(bare_machine):
    with pytest.raises(MissingServer) as postgres:
        postgres_bin()
    with pytest.raises(MissingServer) as redis:
        redis_program()
    for error, package in ((postgres, "apt install postgresql"), (redis, "apt install redis-server")):
        message = str(error.value)
        assert "\n" not in message
        assert package in message


def test_named_programs_come_first_and_the_system_serves_when_no_wheel_does(bare_machine, monkeypatch, tmp_path):
    folder = tmp_path / "pg" / "bin"
    folder.mkdir(parents=True)
    for name in ("postgres", "initdb"):
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)
    monkeypatch.setattr(
        server_programs.shutil, "which", lambda name: str(folder / name) if name == "postgres" else None
    )
    assert postgres_bin() == folder.resolve()
    monkeypatch.setenv("PG_BIN", str(tmp_path))
    with pytest.raises(MissingServer, match="holds no postgres"):
        postgres_bin()
    monkeypatch.setenv("REDIS_SERVER", str(folder / "postgres"))
    assert redis_program() == folder / "postgres"


def test_make_test_stops_with_that_one_line(tmp_path):
    env = {**os.environ, "PG_BIN": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "scripts/devstack.py", "exec", "--", "true"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"devstack: PG_BIN={tmp_path} holds no postgres and initdb programs."]
    assert not Path(tmp_path / "pgdata").exists()
