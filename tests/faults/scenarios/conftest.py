"""The fault session's own servers, started before anything connects, and the `faults` fixture scenarios use.

The suite's fixtures (tests/conftest.py: cluster, web, engine) are reused as they are:
the environment (tests/faults/launch.py) points them at these servers.
"""

from collections.abc import Iterator

import pytest

from scripts.servers import PostgresServer, RedisServer
from tests.faults.injection import Faults, Servers
from tests.faults.launch import FaultStack
from tests.faults.ledger import ledger_create

STACK = FaultStack.from_environment()
if STACK is None:  # outside a fault session the parent conftest does not even collect this folder
    raise pytest.UsageError("The fault scenarios run in a session of their own: python -m tests.faults")


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    assert STACK is not None
    (STACK.workdir / "postgres").mkdir(exist_ok=True)
    (STACK.workdir / "redis").mkdir(exist_ok=True)
    started = Servers(
        postgres=PostgresServer(STACK.workdir / "postgres", port=STACK.postgres_port, password=STACK.postgres_password),
        redis=RedisServer(STACK.workdir / "redis", port=STACK.redis_port, password=STACK.redis_password),
    )
    try:
        started.postgres.create()
        started.redis.start()
        yield started
    finally:
        started.redis.stop()
        started.postgres.stop()


@pytest.fixture(scope="session")
def django_db_setup(servers, django_db_setup):
    """The test database, created on this session's own PostgreSQL."""
    return django_db_setup


@pytest.fixture(scope="session")
def _ledger(django_db_setup, django_db_blocker) -> None:
    with django_db_blocker.unblock():
        ledger_create()


@pytest.fixture
def _revived(servers, cluster, web) -> Faults:
    """The stack as a scenario expects it, whatever the previous one left down."""
    faults = Faults(cluster=cluster, servers=servers, web=web)
    faults.revive()
    return faults


@pytest.fixture
def faults(_revived, _ledger, engine) -> Iterator[Faults]:
    """Workers, beat and web on this session's servers, and the faults to inject into them."""
    yield _revived
    _revived.revive()
