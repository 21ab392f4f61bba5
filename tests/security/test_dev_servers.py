"""Development servers: another local user reaches neither PostgreSQL nor Redis, nor reads the admin's password."""

import os
import subprocess
from pathlib import Path

import psycopg
import pytest
import redis

from scripts import devstack
from scripts.servers import HBA, PostgresServer, RedisServer, postgres_server, redis_server


@pytest.fixture
def workdir(tmp_path) -> Path:
    return tmp_path


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_postgres_refuses_connections_without_the_password_over_tcp_and_its_socket(workdir):
    with postgres_server(workdir) as server:
        for url in (
            f"postgresql://postgres@127.0.0.1:{server.port}/plans",
            f"postgresql://postgres@/plans?host={server.workdir}&port={server.port}",
            f"postgresql://postgres:wrong@127.0.0.1:{server.port}/plans",
        ):
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(url, connect_timeout=5)
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        assert server.password not in command_line(server.process.pid)


def test_redis_refuses_commands_without_the_password_which_no_command_line_shows(workdir):
    with redis_server(workdir) as server:
        for client in (redis.Redis(port=server.port), redis.Redis(port=server.port, password="wrong")):
            with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
                client.set("stolen", "queue")
        assert redis.Redis.from_url(server.url).ping()
        assert server.password not in command_line(server.process.pid)
        assert oct((workdir / "redis.conf").stat().st_mode & 0o777) == "0o600"


def test_a_database_an_earlier_version_made_with_trust_asks_for_the_password_from_now_on(workdir):
    data = workdir / "kept"
    data.mkdir()
    old = PostgresServer(workdir, data=data)
    old._own_folders()  # as root, PostgreSQL's own user owns the folders
    subprocess.run(
        [str(old.bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
        check=True,
        capture_output=True,
        user=old._user,
        group=old._group,
    )
    assert "trust" in (data / "pg_hba.conf").read_text()

    with postgres_server(workdir, data, password="kept-password") as server:
        assert (data / "pg_hba.conf").read_text() == HBA
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/plans", connect_timeout=5)
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_make_run_gives_the_admin_password_to_createsuperuser_and_flower_only(tmp_path, monkeypatch):
    calls: list[tuple[tuple[str, ...], dict[str, str]]] = []
    started: dict[str, dict[str, str]] = {}
    monkeypatch.setattr(devstack, "manage", lambda env, *args, **kw: calls.append((args, dict(env))) or _done())
    monkeypatch.setattr(devstack, "run_child", lambda command, env: started.setdefault("env", dict(env)) and 0)
    workdir = tmp_path / "run"
    workdir.mkdir()
    env = {
        **os.environ,
        "DEVSTACK_DIR": str(workdir),
        "DJANGO_SUPERUSER_PASSWORD": "the-admin-password",
        "PORT": "1",
        "FLOWER_PORT": "2",
    }
    (tmp_path / "home").mkdir()
    devstack.serve(env, tmp_path / "home", saved=None)

    createsuperuser = next(env for args, env in calls if args[0] == "createsuperuser")
    assert createsuperuser["DJANGO_SUPERUSER_PASSWORD"] == "the-admin-password"
    for args, passed in calls:
        if args[0] != "createsuperuser":
            assert "the-admin-password" not in passed.values(), args
    processes = started["env"]
    assert not any("the-admin-password" in value for value in processes.values())
    flower = Path(processes["FLOWER_CONF"])
    assert oct(flower.stat().st_mode & 0o777) == "0o600"
    assert "admin:the-admin-password" in flower.read_text()


def _done() -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess([], 0, "", "")


def test_servers_can_be_restarted_on_the_same_port_and_password(workdir):
    server = RedisServer(workdir)
    server.start()
    try:
        server.stop()
        server.start()
        assert redis.Redis.from_url(server.url).ping()
    finally:
        server.stop()
