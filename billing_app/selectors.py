"""Every read that makes a decision or shapes an answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Prefetch, QuerySet
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
    return window_for(period, at, anchor=anchor, tz=billing_settings.TIME_ZONE)


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
