"""License checks, as Salable answers them: what a grantee may do, from every
subscription it uses (the seats it holds, and its own subscription when customers are
users): the plan's key, the kit's primitives and the plan's features."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

from ..entitlements import USABLE_STATUSES
from ..models import BillingPeriod, Subscription
from .selectors import subscriptions_of_grantee


def license_check(
    *, grantee_ids: Iterable[Any], grace_days: int = 0, at: datetime | None = None
) -> list[dict[str, Any]]:
    """The capabilities the grantees hold, each with its expiry (the end of the current
    billing period, or of the grace after a lapse), sorted by name; [] when none. A
    lapsed subscription (ended, or not active or trialing) keeps its capabilities for
    ``grace_days`` after it lapsed."""
    at = at or timezone.now()
    User = get_user_model()
    found: dict[str, datetime | None] = {}
    for grantee_id in grantee_ids:
        try:
            grantee = User._default_manager.get(pk=User._meta.pk.to_python(grantee_id))
        except Exception:
            continue  # an unknown grantee holds nothing, as in Salable
        for subscription in subscriptions_of_grantee(grantee=grantee):
            expiry = _expiry(subscription, grace=timedelta(days=grace_days), at=at)
            if expiry is False:
                continue
            for capability in capabilities_of(subscription):
                known = found.get(capability, False)
                if capability not in found or (
                    known is not None and (expiry is None or expiry > known)
                ):
                    found[capability] = expiry
    return [{"capability": name, "expiry": found[name]} for name in sorted(found)]


def capabilities_of(subscription: Subscription) -> list[str]:
    plan = subscription.plan
    names = [plan.key, *(feature.feature for feature in plan.features.all())]
    if plan.account_kit is not None:  # no query when the plan has no kit
        names.extend(p.primitive for p in plan.account_kit.primitives.all())
    return names


def _expiry(subscription: Subscription, *, grace: timedelta, at: datetime) -> Any:
    """When the subscription's capabilities end; None when open-ended, False when they
    already have."""
    if subscription.status in USABLE_STATUSES or subscription.status == "past_due":
        period = BillingPeriod.objects.filter(
            subscription=subscription, start__lte=at, end__gt=at
        ).first()
        return period.end if period is not None else None
    lapsed = subscription.ended_at or subscription.status_changed_at
    return lapsed + grace if lapsed + grace > at else False
