"""Helpers for host projects' tests: give a customer a plan and quotas in one line.

from billing_app.testutils import subscribe

def test_report_is_metered(user):
    subscribe(user, quotas={"seo": 2})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .catalog import services as catalog
from .entitlements import cache_clear
from .models import Subscription
from .subscriptions import services as subscriptions


def subscribe(
    customer: Any,
    *,
    quotas: Mapping[str, int] | None = None,
    gauges: Mapping[str, int] | None = None,
    primitives: list[str] | None = None,
    features: list[str] | None = None,
    period: str = "month",
    status: str = "active",
    plan_key: str | None = None,
    **subscription_fields: Any,
) -> Subscription:
    """Put ``customer`` on a plan made for the test: ``quotas`` per primitive (and
    ``gauges``, limits on levels), and when ``primitives`` is given an Account Kit allowing
    just those."""
    key = plan_key or f"test-{customer.pk}"
    kit_key = None
    if primitives is not None:
        kit_key = f"{key}-kit"
        catalog.account_kit_upsert(
            key=kit_key, name=kit_key, primitives={p: None for p in primitives}
        )
    catalog.plan_upsert(
        key=key,
        name=key,
        account_kit_id=kit_key,
        quotas=dict(quotas or {}),
        gauges=dict(gauges or {}),
        features=list(features or []),
        period=period,
    )
    return subscriptions.subscription_set(
        customer=customer, plan_key=key, status=status, **subscription_fields
    )


__all__ = ["cache_clear", "subscribe"]
