"""Helpers the test modules share (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from django.core.cache.backends.base import BaseCache
from django.db import connection
from django.test import Client
from django.utils import timezone

from billing_app.conf import customer_is_user
from billing_app.entitlements import entitlement_for
from billing_app.metering import services as metering
from billing_app.metering.ledger import Reservation
from billing_app.metering.selectors import usage_rollup
from billing_app.metering.services import customer_key_is_integer
from billing_app.models import BillingPeriod, UsageCounter, UsageEvent
from billing_app.periods import Window

from .factories import UserFactory


def use(customer: Any, quantity: int, at: datetime, *, primitive: str = "seo") -> Reservation:
    """Usage that happened at ``at``, recorded as reported usage is: past any quota (it
    happened already) and at any age (the API's age limit is tested on its own)."""
    return metering.usage_reserve(
        customer_id=customer.pk,
        primitive=primitive,
        quantity=quantity,
        at=at,
        enforce=False,
        live=False,
    )


def periods_of(customer: Any) -> list[BillingPeriod]:
    """The customer's billing periods, oldest first."""
    return list(
        BillingPeriod.objects.filter(customer=customer).select_related("plan").order_by("start")
    )


def assert_tiled(periods: list[BillingPeriod]) -> None:
    """Each period starts where the one before it ended: no gap, no overlap."""
    assert periods, "no billing period at all"
    for earlier, later in itertools.pairwise(periods):
        assert earlier.end == later.start, (earlier, later)
    for period in periods:
        assert period.start < period.end


def bearer(key: str, **headers: str) -> Client:
    """A plain Django test client sending ``Authorization: Bearer <key>`` (and ``headers``)."""
    return Client(headers={"Authorization": f"Bearer {key}", **headers})


def post_json(client: Client, path: str, body: Any = None, **extra: Any) -> Any:
    return client.post(
        path,
        data=json.dumps({} if body is None else body),
        content_type="application/json",
        **extra,
    )


def iso(instant: datetime) -> str:
    """An instant as the API writes it."""
    return instant.isoformat().replace("+00:00", "Z")


def ratelimit_field(value: str) -> dict[str, str]:
    """``"seo";r=2;t=30`` -> {"name": "seo", "r": "2", "t": "30"}."""
    name, *params = value.split(";")
    return {"name": name.strip('"'), **dict(p.split("=", 1) for p in params)}


def events_of(customer: Any, primitive: str = "seo") -> int:
    return UsageEvent.objects.filter(customer_id=customer.pk, primitive=primitive).count()


def counters_of(customer: Any) -> dict[tuple[str, datetime], int]:
    """Every counter row of ``customer``: (primitive, window start) -> used."""
    rows = UsageCounter.objects.filter(customer_id=customer.pk)
    return {(c.primitive, c.window_start): c.used for c in rows}


def window_now(customer: Any) -> Window:
    """The customer's current quota window, as enforcement computes it."""
    return entitlement_for(customer_id=customer.pk, fresh=True).window(timezone.now())


def used_now(customer: Any, primitive: str = "seo") -> int:
    """The customer's usage of ``primitive`` in its current window, as the API shows it."""
    return usage_rollup(customer_id=customer.pk).usage.get(primitive, 0)


def absent_customer_id() -> Any:
    """A well-formed key of the customer model (an int or a UUID) that names no customer."""
    return 10**12 if customer_key_is_integer() else uuid.uuid4()


def session_client(customer: Any) -> Client:
    """A client signed in as someone the customer's calls are billed to: the customer
    itself when customers are users, else a user holding one of its seats (the customer
    must have a subscription then)."""
    from billing_app.subscriptions.services import seats_manage

    client = Client()
    if customer_is_user():
        client.force_login(customer)
        return client
    member = UserFactory()
    seats_manage(
        subscription_id=customer.billing_subscription.pk,
        operations=[{"type": "add", "grantee_id": member.pk}],
    )
    client.force_login(member)
    return client


def in_parallel(calls: Callable[[int], Any], count: int, *, workers: int = 50) -> list[Any]:
    """``calls(i)`` for i in range(count), on ``workers`` threads (each with its own
    database connection) released together by a barrier, so the calls really overlap."""
    barrier = threading.Barrier(min(workers, count))

    def run(i: int) -> Any:
        if i < barrier.parties:
            barrier.wait()
        try:
            return calls(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, range(count)))


class CacheDown(ConnectionError):
    pass


class FailingCache(BaseCache):
    """A Django cache backend that is down: every call raises, as a Redis that cannot be
    reached does. ``CACHES = {"broken": {"BACKEND": "tests.utils.FailingCache"}}``."""

    calls = 0

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)

    def _down(self, *args: Any, **kwargs: Any) -> Any:
        type(self).calls += 1
        raise CacheDown("the cache is down")

    add = get = set = touch = delete = has_key = incr = decr = clear = _down
    get_many = set_many = delete_many = get_or_set = _down
