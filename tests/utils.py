"""Helpers shared by the test modules."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from billing_app.metering import services as metering
from billing_app.metering.ledger import Reservation
from billing_app.models import BillingPeriod


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
