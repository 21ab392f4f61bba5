"""API test clients for each kind of user in the permission matrix."""

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from tests.support.factories import UserFactory


def client_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def owner(db):
    return UserFactory(username="owner")


@pytest.fixture
def api(owner) -> APIClient:
    return client_for(owner)


@pytest.fixture
def stranger(db):
    return UserFactory(username="stranger")


@pytest.fixture
def staff(db):
    return UserFactory(username="staff", is_staff=True)


@pytest.fixture
def approver(db):
    user = UserFactory(username="approver", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="decide_approval", content_type__app_label="approvals"))
    return user
