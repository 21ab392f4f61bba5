"""Admin test fixtures: a superuser, an approver, a plan owner and a bystander (all staff)."""

import pytest

from tests.desk.support import staff


@pytest.fixture
def superuser():
    return staff("root", superuser=True)


@pytest.fixture
def approver():
    return staff("approver", permission=True)


@pytest.fixture
def owner():
    return staff("owner")


@pytest.fixture
def bystander():
    return staff("bystander")
