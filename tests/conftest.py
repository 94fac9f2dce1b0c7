import pytest
from django.db import connection
from rest_framework.test import APIClient

from billing_app import services

from .factories import UserFactory


def pytest_collection_modifyitems(config, items):
    """On SQLite, leave out the tests that need PostgreSQL (scripts/test runs both)."""
    if connection.vendor == "postgresql":
        return
    kept = [item for item in items if item.get_closest_marker("postgresql") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


@pytest.fixture
def operator_key(db):
    return services.operator_key_create(name="tests")[1]


@pytest.fixture
def api(operator_key):
    """An API client authenticated with an operator key."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {operator_key}")
    return client


@pytest.fixture
def anonymous():
    return APIClient()


@pytest.fixture
def tenant(db):
    return UserFactory()


@pytest.fixture
def tenant_token(tenant):
    return services.tenant_token_issue(user=tenant)[1]
