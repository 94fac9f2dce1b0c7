"""Helpers for host projects' tests: give a user a plan and quotas in one line.

from billing_app.testutils import subscribe

def test_report_is_metered(user):
    subscribe(user, quotas={"seo": 2})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import services
from .models import Subscription


def subscribe(
    user: Any,
    *,
    quotas: Mapping[str, int] | None = None,
    primitives: list[str] | None = None,
    period: str = "month",
    status: str = "active",
    plan_key: str | None = None,
    **subscription_fields: Any,
) -> Subscription:
    """Put ``user`` on a plan made for the test: ``quotas`` per primitive, and when
    ``primitives`` is given an Account Kit allowing just those."""
    key = plan_key or f"test-{user.pk}"
    kit_key = None
    if primitives is not None:
        kit_key = f"{key}-kit"
        services.account_kit_upsert(
            key=kit_key, name=kit_key, primitives={p: None for p in primitives}
        )
    services.plan_upsert(
        key=key, name=key, account_kit_id=kit_key, quotas=dict(quotas or {}), period=period
    )
    return services.subscription_set(user=user, plan_key=key, status=status, **subscription_fields)
