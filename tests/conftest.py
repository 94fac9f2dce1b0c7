import pytest
from django.db import connection
from rest_framework.test import APIClient

from billing_app.customers import services as customers

from .factories import CustomerFactory, UserFactory

# The fixtures host projects get (billing_customer, billing_clock, ...). An installed
# billing_app loads them by its pytest11 entry point under this same name; naming them here
# keeps them when the installed metadata predates it (an editable install).
pytest_plugins = ["billing_app.pytest_plugin"]


def pytest_collection_modifyitems(config, items):
    """On SQLite, leave out the tests that need PostgreSQL (scripts/test runs both). The
    browser tests serve the demo on a database of their own whatever the settings, and are
    slow: they run once, in the PostgreSQL run of the default settings, or with -m browser."""
    from django.conf import settings

    postgresql = connection.vendor == "postgresql"
    browser = "browser" in (config.option.markexpr or "") or (
        postgresql and settings.SETTINGS_MODULE == "tests.settings"
    )
    kept = [
        item
        for item in items
        if (postgresql or item.get_closest_marker("postgresql") is None)
        and (browser or item.get_closest_marker("browser") is None)
    ]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The test database as production runs it: usage events partitioned by month on
    PostgreSQL, as migrate makes them (the suite builds its tables without migrations)."""
    from billing_app.metering.partitions import events_partition

    with django_db_blocker.unblock():
        events_partition()


@pytest.fixture
def operator_key(db):
    return customers.operator_key_create(name="tests")[1]


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
def customer(db):
    """A customer of the model the settings bill (a user, or an organisation)."""
    return CustomerFactory()


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def customer_token(customer):
    return customers.tenant_token_issue(customer=customer)[1]


@pytest.fixture
def customer_client(customer_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {customer_token}")
    return client


@pytest.fixture
def clock(monkeypatch):
    """The app's clock, frozen at the real time until the test sets it (``clock.set``)."""
    from django.utils import timezone

    from .utils import Clock

    clock = Clock(timezone.now())
    monkeypatch.setattr(timezone, "now", clock)
    return clock


@pytest.fixture
def rate_minute(monkeypatch):
    """Pins the clock minute that kits' per-minute rates count in, so that no minute
    boundary falls inside a test; ``rate_minute.advance()`` starts the next one."""
    import math

    from django.utils import timezone

    from billing_app.metering import ledger
    from billing_app.metering import services as metering
    from billing_app.periods import MINUTE, Window, minute_window

    class Minute:
        start = minute_window(timezone.now()).start

        def window(self, instant):
            return Window(self.start, self.start + MINUTE)

        def advance(self):
            self.start += MINUTE

        def seconds_left(self):
            return math.ceil((self.start + MINUTE - timezone.now()).total_seconds())

    minute = Minute()
    monkeypatch.setattr(ledger, "minute_window", minute.window)
    monkeypatch.setattr(metering, "minute_window", minute.window)
    return minute


@pytest.fixture
def atomic_requests(monkeypatch):
    """``ATOMIC_REQUESTS`` on where Django's handler reads it: the connection's settings.
    Overriding the ``DATABASES`` setting would not reach the connection that exists
    already; the test views answer ``"atomic": true`` to show that this does."""
    from django.db import connections

    for each in connections.all():
        monkeypatch.setitem(each.settings_dict, "ATOMIC_REQUESTS", True)


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Each test starts with no entitlement cached in this process, nor in Django's."""
    from django.core.cache import cache

    from billing_app.entitlements import cache_clear

    cache_clear()
    cache.clear()
    yield
    cache_clear()
    cache.clear()


@pytest.fixture(autouse=True)
def _counters_equal_events(request):
    """The ledger invariant, after every test that touched the database: each counter
    equals the sum of its window's events, and each gauge level the sum of its changes."""
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

    from billing_app.models import IdempotencyKey, UsageCounter, UsageEvent

    events = (
        UsageEvent.objects.filter(
            customer_id=OuterRef("customer_id"),
            primitive=OuterRef("primitive"),
            window_start=OuterRef("window_start"),
        )
        .order_by()
        .values("customer_id")
        .annotate(total=Sum("quantity"))
        .values("total")
    )
    counters = UsageCounter.objects.annotate(events=Coalesce(Subquery(events), 0))
    mismatched = [
        (c.customer_id, c.primitive, c.window_start, c.used, c.events)
        for c in counters
        if c.used != c.events
    ]
    counted = set(UsageCounter.objects.values_list("customer_id", "primitive", "window_start"))
    orphans = [
        key
        for key in UsageEvent.objects.values_list(
            "customer_id", "primitive", "window_start"
        ).distinct()
        if key not in counted
    ]
    # Every idempotency key has its one event, and every keyed event its key.
    keys = set(IdempotencyKey.objects.values_list("customer_id", "key"))
    keyed = list(
        UsageEvent.objects.exclude(idempotency_key="").values_list("customer_id", "idempotency_key")
    )
    unpaired = sorted(keys ^ set(keyed), key=str) + [k for k in set(keyed) if keyed.count(k) > 1]
    return mismatched + orphans + unpaired + credit_mismatches() + gauge_mismatches()


def credit_mismatches():
    """Each credit balance equals the sum of its entries."""
    from django.db.models import Sum

    from billing_app.models import CreditBalance, CreditEntry

    sums = dict(
        CreditEntry.objects.values_list("customer_id").annotate(total=Sum("delta")).order_by()
    )
    return [
        ("credits", row.customer_id, row.balance, sums.get(row.customer_id, 0))
        for row in CreditBalance.objects.all()
        if row.balance != sums.get(row.customer_id, 0)
    ]


def gauge_mismatches():
    """Each gauge level equals the sum of its changes, and replaying its events in order
    gives each one's level_after: the levels can be rebuilt from the events."""
    from billing_app.models import GaugeEvent, GaugeLevel

    levels = {(g.customer_id, g.primitive): g.level for g in GaugeLevel.objects.all()}
    replayed: dict = {}
    mismatched = []
    for event in GaugeEvent.objects.order_by("id"):
        key = (event.customer_id, event.primitive)
        replayed[key] = replayed.get(key, 0) + event.delta
        if replayed[key] != event.level_after:
            mismatched.append(("gauge event", event.pk, event.level_after, replayed[key]))
    for key in sorted(set(levels) | set(replayed), key=str):
        if levels.get(key) != replayed.get(key, 0):
            mismatched.append(("gauge", *key, levels.get(key), replayed.get(key, 0)))
    return mismatched


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
