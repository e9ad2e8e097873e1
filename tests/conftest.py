from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def pytest_sessionstart(session):
    """The suite's promises are about PostgreSQL; refuse to run on anything else."""
    if connection.vendor != "postgresql":
        raise pytest.UsageError(
            "run the tests on PostgreSQL: DATABASE_URL=postgres://... (make test)"
        )


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def _make_user(username: str, **extra):
    return get_user_model().objects.create_user(
        username=username, password=f"{username}-password-1", **extra
    )


@pytest.fixture
def alice(db):
    return _make_user("alice")


@pytest.fixture
def bob(db):
    return _make_user("bob")


def _client_for(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def alice_client(alice) -> APIClient:
    return _client_for(alice)


@pytest.fixture
def bob_client(bob) -> APIClient:
    return _client_for(bob)


@pytest.fixture
def anonymous_client() -> APIClient:
    return APIClient()
