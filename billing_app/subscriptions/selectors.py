"""Reads of subscriptions and their billing periods."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from ..conf import customer_is_user
from ..models import BillingPeriod, Seat, Subscription


def subscription_get(*, customer: Any) -> Subscription | None:
    return (
        Subscription.objects.select_related("plan__account_kit")
        .prefetch_related("plan__quotas", "plan__features")
        .filter(customer=customer)
        .first()
    )


def subscription_by_id(*, subscription_id: Any) -> Subscription | None:
    try:
        return Subscription.objects.select_related("plan").filter(pk=int(subscription_id)).first()
    except (TypeError, ValueError, OverflowError):
        return None


def period_at(*, customer: Any, at: datetime) -> BillingPeriod | None:
    """The billing period of ``customer`` containing ``at``, or None."""
    return (
        BillingPeriod.objects.select_related("plan")
        .filter(customer=customer, start__lte=at, end__gt=at)
        .first()
    )


def period_latest(*, customer: Any) -> BillingPeriod | None:
    return BillingPeriod.objects.select_related("plan").filter(customer=customer).first()


def periods_of(*, customer: Any) -> QuerySet[BillingPeriod]:
    return BillingPeriod.objects.select_related("plan").filter(customer=customer)


def seats_of(*, subscription: Subscription) -> QuerySet[Seat]:
    return Seat.objects.filter(subscription=subscription).select_related("grantee")


def subscriptions_of_grantee(*, grantee: Any) -> Any:
    """The subscriptions a grantee uses: those whose seat it holds, and its own when
    customers are users."""
    held = Q(seat_set__grantee=grantee)
    if customer_is_user():
        held |= Q(customer_id=grantee.pk)
    return Subscription.objects.filter(held).select_related("plan").distinct()


def invoices_of(*, customer: Any) -> Any:
    """dj-stripe's synced invoices of the customer's Stripe customers, newest first."""
    from djstripe.models import Invoice

    customers = Q(customer__subscriber=customer)
    subscription = Subscription.objects.filter(customer=customer).exclude(stripe_customer_id="")
    if row := subscription.first():
        customers |= Q(customer_id=row.stripe_customer_id)
    return Invoice.objects.filter(customers).order_by("-created", "-djstripe_id")


def trial_taken(*, customer: Any, stripe_customer_id: str = "") -> bool:
    """Whether the customer had a trial: here, or by any of its Stripe customers (ours, or
    any Stripe subscription of theirs dj-stripe has synced with a trial)."""
    from djstripe.models import Customer as StripeCustomer
    from djstripe.models import Subscription as StripeSubscription

    own = Subscription.objects.filter(customer=customer).first()
    if own is not None and own.trial_start is not None:
        return True
    stripe_ids = set(
        StripeCustomer.objects.filter(subscriber=customer).values_list("id", flat=True)
    )
    stripe_ids.update(i for i in (stripe_customer_id, own and own.stripe_customer_id) if i)
    if not stripe_ids:
        return False
    if Subscription.objects.filter(
        stripe_customer_id__in=stripe_ids, trial_start__isnull=False
    ).exists():
        return True
    synced = StripeSubscription.objects.filter(customer_id__in=stripe_ids)
    return any(row.stripe_data.get("trial_start") for row in synced.only("stripe_data"))
