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


@pytest.fixture(autouse=True)
def _fresh_cache():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _counters_equal_events(request):
    """The ledger invariant, after every test that touched the database: each counter
    equals the sum of its window's events."""
    marker = request.node.get_closest_marker("django_db")
    uses_db = marker is not None or {"db", "transactional_db"} & set(request.fixturenames)
    if not uses_db:
        yield
        return
    transactional = bool(marker and marker.kwargs.get("transaction")) or (
        "transactional_db" in request.fixturenames
    )
    request.getfixturevalue("transactional_db" if transactional else "db")
    yield
    assert ledger_mismatches() == []


def ledger_mismatches():
    from django.db.models import OuterRef, Subquery, Sum
    from django.db.models.functions import Coalesce

    from billing_app.models import UsageCounter, UsageEvent

    events = (
        UsageEvent.objects.filter(
            user_id=OuterRef("user_id"),
            primitive=OuterRef("primitive"),
            window_start=OuterRef("window_start"),
        )
        .order_by()
        .values("user_id")
        .annotate(total=Sum("quantity"))
        .values("total")
    )
    counters = UsageCounter.objects.annotate(events=Coalesce(Subquery(events), 0))
    mismatched = [
        (c.user_id, c.primitive, c.window_start, c.used, c.events)
        for c in counters
        if c.used != c.events
    ]
    counted = set(UsageCounter.objects.values_list("user_id", "primitive", "window_start"))
    orphans = [
        key
        for key in UsageEvent.objects.values_list("user_id", "primitive", "window_start").distinct()
        if key not in counted
    ]
    return mismatched + orphans


# Stripe: a stand-in server on loopback (tests/stripe_stub.py) that dj-stripe and our code
# call through stripe-python, unchanged.


@pytest.fixture(scope="session")
def _stripe_server():
    import stripe

    from .stripe_stub import StripeStub

    stub = StripeStub()
    previous = stripe.api_base, stripe.max_network_retries
    stripe.api_base = stub.serve()
    stripe.max_network_retries = 0  # our own retries are under test, not stripe-python's
    yield stub
    stripe.api_base, stripe.max_network_retries = previous


@pytest.fixture
def stripe_stub(_stripe_server, caplog):
    """The Stripe stand-in, emptied. dj-stripe warnings fail the test: they mean the
    stand-in served something dj-stripe did not expect."""
    import logging

    _stripe_server.reset()
    caplog.set_level(logging.WARNING, logger="djstripe")
    yield _stripe_server
    complaints = [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("djstripe") and record.levelno >= logging.WARNING
    ]
    assert complaints == []
