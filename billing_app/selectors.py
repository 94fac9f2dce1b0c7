"""Every read that makes a decision or shapes an answer."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from .conf import billing_settings
from .exceptions import NotFound
from .models import AccountKit, KitAssignment, Plan, Subscription, UsageCounter
from .periods import Window, window_for


def plan_list() -> QuerySet[Plan]:
    return Plan.objects.select_related("account_kit").prefetch_related("quotas")


def account_kit_list() -> QuerySet[AccountKit]:
    return AccountKit.objects.prefetch_related("primitives")


def tenant_get(*, user_id: Any) -> Any:
    """The tenant with this id, or NotFound naming the id (also for ids of the wrong type)."""
    User = get_user_model()
    try:
        return User._default_manager.get(pk=user_id)
    except (User.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"No user with id {user_id!r}.") from None


def subscription_get(*, user: Any) -> Subscription | None:
    return (
        Subscription.objects.select_related("plan__account_kit")
        .prefetch_related(Prefetch("plan__quotas"))
        .filter(user=user)
        .first()
    )


def kit_of(*, user: Any) -> AccountKit | None:
    assignment = KitAssignment.objects.select_related("kit").filter(user=user).first()
    return assignment.kit if assignment else None


def quota_window(*, subscription: Subscription | None, at: datetime) -> Window:
    """The quota window containing ``at``: anniversaries of the Stripe period when there is
    one, else calendar windows of the plan's period (or ``BILLING_DEFAULT_PERIOD``)."""
    period = subscription.plan.period if subscription else billing_settings.DEFAULT_PERIOD
    anchor = subscription.current_period_start if subscription else None
    restart = subscription.usage_reset_at if subscription else None
    return window_for(period, at, anchor=anchor, tz=billing_settings.TIME_ZONE, restart=restart)


@dataclass(frozen=True)
class UsageRollup:
    plan: str | None
    status: str | None
    period: str
    period_start: datetime
    period_end: datetime
    quotas: dict[str, int]
    usage: dict[str, int]


def usage_rollup(*, user: Any, at: datetime | None = None) -> UsageRollup:
    """The tenant's usage of the quota window containing ``at`` (now), against its quotas.

    Reads the counters, one row per primitive, so its cost does not grow with the number of
    events in the window.
    """
    subscription = subscription_get(user=user)
    window = quota_window(subscription=subscription, at=at or timezone.now())
    usage = dict(
        UsageCounter.objects.filter(user=user, window_start=window.start)
        .order_by("primitive")
        .values_list("primitive", "used")
    )
    quotas = (
        {quota.primitive: quota.limit for quota in subscription.plan.quotas.all()}
        if subscription
        else {}
    )
    return UsageRollup(
        plan=subscription.plan.key if subscription else None,
        status=subscription.status if subscription else None,
        period=subscription.plan.period if subscription else billing_settings.DEFAULT_PERIOD,
        period_start=window.start,
        period_end=window.end,
        quotas=quotas,
        usage=usage,
    )


def invoices_of(*, user: Any) -> Any:
    """dj-stripe's synced invoices of the tenant's Stripe customers, newest first."""
    from djstripe.models import Invoice

    customers = Q(customer__subscriber=user)
    subscription = Subscription.objects.filter(user=user).exclude(stripe_customer_id="").first()
    if subscription is not None:
        customers |= Q(customer_id=subscription.stripe_customer_id)
    return Invoice.objects.filter(customers).order_by("-created", "-djstripe_id")


# Entitlements: what a tenant may do now. Read on every metered call, so cached.


@dataclass(frozen=True)
class Entitlement:
    """Everything the enforcement needs about one tenant, in one cacheable value."""

    user_id: Any
    plan: str | None
    status: str | None
    period: str
    anchor: datetime | None
    quotas: dict[str, int]
    # primitive -> calls per minute (None: no rate limit); None: the tenant has no kit.
    kit: dict[str, int | None] | None
    # Why every call is refused (402 subscription_inactive), or None.
    inactive: str | None = None
    # A past_due tenant keeps its quotas until then.
    grace_until: datetime | None = None
    # A plan change that reset usage restarts the quota window here.
    restart: datetime | None = None
    # Primitives whose quota is soft: past it, calls go on and the excess is billed.
    billed: frozenset[str] = frozenset()

    @property
    def limited(self) -> bool:
        return self.plan is not None

    def window(self, at: datetime) -> Window:
        return window_for(
            self.period,
            at,
            anchor=self.anchor,
            tz=billing_settings.TIME_ZONE,
            restart=self.restart,
        )

    def inactive_reason(self, at: datetime) -> str | None:
        if self.grace_until is not None and at >= self.grace_until:
            return f"The subscription has been past due since before {self.grace_until:%Y-%m-%d}."
        return self.inactive


_USABLE = {"trialing", "active"}
_GENERATION_KEY = "billing:entitlement:generation"


def _cache() -> Any:
    from django.core.cache import caches

    return caches[billing_settings.CACHE]


def _entitlement_key(user_id: Any) -> str:
    generation = _cache().get_or_set(_GENERATION_KEY, 0, timeout=None)
    return f"billing:entitlement:{generation}:{user_id}"


def entitlement_for(*, user_id: Any) -> Entitlement:
    """The tenant's entitlement, from the cache when it is there.

    ``receivers`` drops a tenant's entry when its subscription or kit changes, and every
    entry at once (a new generation) when any plan, quota or kit changes.
    """
    key = _entitlement_key(user_id)
    entitlement = _cache().get(key)
    if entitlement is None:
        entitlement = _entitlement_build(user_id=user_id)
        _cache().set(key, entitlement, billing_settings.ENTITLEMENT_CACHE_TIMEOUT)
    return entitlement  # type: ignore[no-any-return]


def entitlement_forget(*, user_id: Any | None = None) -> None:
    """Drop one tenant's cached entitlement, or everyone's when ``user_id`` is None."""
    if user_id is None:
        # No generation yet means nothing is cached under one.
        with suppress(ValueError):
            _cache().incr(_GENERATION_KEY)
    else:
        _cache().delete(_entitlement_key(user_id))


def _entitlement_build(*, user_id: Any) -> Entitlement:
    kit = (
        AccountKit.objects.prefetch_related("primitives")
        .filter(assignments__user_id=user_id)
        .first()
    )
    allowed = {p.primitive: p.rate_per_minute for p in kit.primitives.all()} if kit else None
    subscription = subscription_get(user=user_id)
    if subscription is None:
        return Entitlement(
            user_id=user_id,
            plan=None,
            status=None,
            period=billing_settings.DEFAULT_PERIOD,
            anchor=None,
            quotas={},
            kit=allowed,
        )

    plan, inactive, grace_until = subscription.plan, None, None
    status = subscription.status
    if status == "past_due":
        grace_until = subscription.status_changed_at + billing_settings.PAST_DUE_GRACE
    elif status not in _USABLE:
        fallback = billing_settings.FALLBACK_PLAN
        fallback_plan = (
            Plan.objects.prefetch_related("quotas").filter(key=fallback).first()
            if fallback
            else None
        )
        if fallback_plan is None:
            inactive = f"The subscription is {status}."
        else:
            plan = fallback_plan
    return Entitlement(
        user_id=user_id,
        plan=plan.key,
        status=status,
        period=plan.period,
        anchor=subscription.current_period_start,
        quotas={quota.primitive: quota.limit for quota in plan.quotas.all()},
        billed=frozenset(q.primitive for q in plan.quotas.all() if q.overage == "bill"),
        kit=allowed,
        inactive=inactive,
        grace_until=grace_until,
        restart=subscription.usage_reset_at,
    )
