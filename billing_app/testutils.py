"""Helpers for host projects' tests: give a customer a plan, quotas and features in one
line, override what customers get for a block or a test, and freeze the billing clock.

    from billing_app.testutils import freeze_billing_clock, override_feature, subscribe

    def test_report_is_metered(user):
        subscribe(user, quotas={"seo": 2})

    @override_feature("sso")
    def test_sso_page(client): ...

pytest fixtures (``billing_customer``, ``billing_subscribed``, ``billing_token``,
``billing_clock``) come with the package: see ``billing_app.pytest_plugin``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

from django.test.utils import TestContextDecorator
from django.utils import timezone

from .catalog import services as catalog
from .entitlements import (
    EntitlementOverride,
    cache_clear,
    entitlement_override_pop,
    entitlement_override_push,
)
from .exceptions import InvalidInput
from .models import Subscription
from .subscriptions import services as subscriptions
from .validation import check_count, check_feature, check_primitive


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


class _Override(TestContextDecorator):
    """Changes what ``customer`` (default: every customer) gets while active, and
    restores it after: as a context manager, a function decorator or a ``TestCase``
    class decorator (as ``override_settings`` and waffle's ``override_flag``).

    Like ``override_settings`` it acts in this process: the entitlement every reader
    builds here (enforcement, ``{% feature %}``, the usage endpoints, the admin's bars)
    includes it; the plan and subscription rows are left as they are. Entering and
    leaving raise the entitlement versions of the customers it touches (through
    ``entitlements_changed``), so an entitlement cached before binds no more."""

    def __init__(self, override: EntitlementOverride) -> None:
        self.override = override
        super().__init__()

    def enable(self) -> None:
        entitlement_override_push(self.override)

    def disable(self) -> None:
        entitlement_override_pop(self.override)


def _customer_id(customer: Any) -> Any:
    return None if customer is None else customer.pk


class override_feature(_Override):
    """``feature`` granted (``active=True``) or withdrawn (``active=False``)."""

    def __init__(self, feature: str, active: bool = True, *, customer: Any = None) -> None:
        check_feature("feature", feature)
        super().__init__(
            EntitlementOverride(
                customer_id=_customer_id(customer), features={feature: bool(active)}
            )
        )


class override_quota(_Override):
    """The quota of ``primitive`` set to ``limit`` per window (None: unlimited). It
    replaces the plan's quota, seats included; one-off grants still add to it."""

    def __init__(self, primitive: str, limit: int | None, *, customer: Any = None) -> None:
        check_primitive("primitive", primitive)
        if limit is not None:
            check_count("limit", limit, what="A quota")
        super().__init__(
            EntitlementOverride(customer_id=_customer_id(customer), quotas={primitive: limit})
        )


class override_plan(_Override):
    """As if subscribed (active) to the plan ``plan_key``: its quotas, features, period
    and kit. Quota and feature overrides, in or around it, apply on top of it."""

    def __init__(self, plan_key: str, *, customer: Any = None) -> None:
        if not isinstance(plan_key, str) or not plan_key:
            raise InvalidInput({"plan_key": ["Name a plan by its key."]})
        super().__init__(EntitlementOverride(customer_id=_customer_id(customer), plan=plan_key))


class BillingClock:
    """The instant ``django.utils.timezone.now`` answers while frozen: the app reads the
    time only through it, so services, enforcement, windows and serializers agree."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, at: datetime | str) -> datetime:
        """Move to ``at``: an aware datetime, or ISO 8601 text (naive means UTC)."""
        self.now = _instant(at)
        return self.now

    def advance(self, delta: timedelta | None = None, **units: float) -> datetime:
        """Move on by ``delta`` or ``timedelta(**units)``: ``clock.advance(days=31)``."""
        self.now += delta if delta is not None else timedelta(**units)
        return self.now


def _instant(at: datetime | str) -> datetime:
    value = datetime.fromisoformat(at) if isinstance(at, str) else at
    if timezone.is_naive(value):
        value = value.replace(tzinfo=UTC)
    return value


class freeze_billing_clock(TestContextDecorator):
    """Freeze the app's clock at ``at`` (default: now) and hand it out to move::

    with freeze_billing_clock("2026-01-31 10:00") as clock:
        ...
        clock.advance(days=1)
    """

    def __init__(self, at: datetime | str | None = None) -> None:
        self.at = at
        # On a TestCase class, each test finds the clock as self.billing_clock.
        super().__init__(attr_name="billing_clock")

    def enable(self) -> BillingClock:
        clock = BillingClock(timezone.now() if self.at is None else _instant(self.at))
        self.patch = mock.patch.object(timezone, "now", clock)
        self.patch.start()
        return clock

    def disable(self) -> None:
        self.patch.stop()


__all__ = [
    "BillingClock",
    "cache_clear",
    "freeze_billing_clock",
    "override_feature",
    "override_plan",
    "override_quota",
    "subscribe",
]
