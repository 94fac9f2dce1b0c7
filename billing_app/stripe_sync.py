"""Stripe, both ways, through dj-stripe.

Stripe → tenant: :func:`subscription_sync` applies what the Stripe API holds now for one
subscription to its tenant, through the same ``services.subscription_set`` as the operator
API and the admin. The webhook receivers, ``billing_sync_subscriptions`` and the tenant's
own actions all end there.

Tenant → Stripe: Checkout, the billing portal and cancellation. Each change is asked of
Stripe first, then applied from Stripe's answer.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import stripe
from django.contrib.auth import get_user_model
from django.db import transaction
from djstripe.models import Customer
from djstripe.models import Session as CheckoutSession
from djstripe.models import Subscription as StripeSubscription
from djstripe.settings import djstripe_settings

from . import services
from .conf import billing_settings
from .exceptions import Conflict, InvalidInput, StripeUnavailable
from .models import Plan, StripeSyncProblem, Subscription, SubscriptionStatus

logger = logging.getLogger(__name__)

ENDED = {SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED}


def api_key() -> str:
    return djstripe_settings.get_default_api_key(livemode=djstripe_settings.STRIPE_LIVE_MODE)


def stripe_id(value: Any) -> str:
    """A Stripe reference, expanded or not, as its id."""
    return (value.get("id") if isinstance(value, dict) else value) or ""


def _time(timestamp: int | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, tz=UTC) if timestamp else None


# --- Stripe → tenant -------------------------------------------------------------------


def tenant_of(data: dict[str, Any]) -> Any:
    """The tenant a Stripe subscription belongs to, or None. In order: the dj-stripe
    customer's subscriber; our metadata key on the subscription, then on the customer; our
    own subscription row for it; the ``client_reference_id`` of the Checkout Session that
    created it."""
    User = get_user_model()
    customer_id = stripe_id(data.get("customer"))
    customer = Customer.objects.select_related("subscriber").filter(id=customer_id).first()
    if customer and customer.subscriber:
        return customer.subscriber
    key = billing_settings.STRIPE_METADATA_KEY
    for metadata in (data.get("metadata"), customer.metadata if customer else None):
        if (metadata or {}).get(key):
            return User._default_manager.filter(pk=_pk(metadata[key])).first()
    own = Subscription.objects.filter(stripe_subscription_id=data["id"]).select_related("user")
    if own_row := own.first():
        return own_row.user
    session = CheckoutSession.objects.filter(subscription_id=data["id"]).first()
    if session and session.client_reference_id:
        return User._default_manager.filter(pk=_pk(session.client_reference_id)).first()
    return None


def _pk(value: Any) -> Any:
    """A user id from Stripe metadata, or None when it cannot be one."""
    try:
        return get_user_model()._meta.pk.to_python(value)
    except Exception:
        return None


def _fetch(stripe_subscription_id: str) -> dict[str, Any]:
    """What the Stripe API holds now, synced into dj-stripe and read back from there."""
    data = StripeSubscription(id=stripe_subscription_id).api_retrieve(api_key=api_key())
    return StripeSubscription.sync_from_stripe_data(data, api_key=api_key()).stripe_data


def subscription_sync(
    stripe_subscription_id: str, *, event_id: str = "", refresh: bool = False
) -> Subscription | None:
    """Apply Stripe's current state of a subscription to its tenant: plan (the item whose
    price is a plan's ``stripe_price_id``), status, ids, period (from that item) and
    ``cancel_at_period_end``; the plan's kit is assigned in the same transaction.

    Safe under duplicate and out-of-order webhooks: it reads Stripe's current state while
    holding a lock on the tenant, so of two concurrent syncs the later reads at least what
    the earlier applied. A subscription with no tenant or no plan is recorded as a
    :class:`StripeSyncProblem` and logged, and None is returned.

    The tenant is found from dj-stripe's copy, which a webhook has just synced; with
    ``refresh`` (or no copy) the subscription and its customer are read from Stripe first.
    """
    with transaction.atomic():
        local = StripeSubscription.objects.filter(id=stripe_subscription_id).first()
        if refresh or local is None:
            data = _fetch(stripe_subscription_id)
            if customer_id := stripe_id(data.get("customer")):
                customer = Customer(id=customer_id).api_retrieve(api_key=api_key())
                Customer.sync_from_stripe_data(customer, api_key=api_key())
        else:
            data = local.stripe_data
        user = tenant_of(data)
        if user is None:
            key = billing_settings.STRIPE_METADATA_KEY
            customer = stripe_id(data.get("customer"))
            return _problem(
                data,
                StripeSyncProblem.Reason.NO_TENANT,
                f"Customer {customer} is linked to no user. Set metadata {key}=<user id> on "
                f"the customer or the subscription (or link the dj-stripe customer to a "
                f"subscriber), then run billing_sync_subscriptions.",
                event_id,
            )
        User = get_user_model()
        User._default_manager.select_for_update().filter(pk=user.pk).first()
        return _apply(user, _fetch(stripe_subscription_id), event_id)


def _apply(user: Any, data: dict[str, Any], event_id: str) -> Subscription | None:
    items = data.get("items", {}).get("data", [])
    prices = [stripe_id(item.get("price")) for item in items]
    plans = {plan.stripe_price_id: plan for plan in Plan.objects.filter(stripe_price_id__in=prices)}
    item = next((item for item in items if stripe_id(item.get("price")) in plans), None)
    if item is None:
        return _problem(
            data,
            StripeSyncProblem.Reason.NO_PLAN,
            f"No plan has the price {' or '.join(prices) or '(none)'} of user {user.pk}'s "
            f"subscription. Set it as a plan's stripePriceId, then run "
            f"billing_sync_subscriptions --user {user.pk}.",
            event_id,
        )
    StripeSyncProblem.objects.filter(stripe_subscription_id=data["id"]).delete()
    current = Subscription.objects.filter(user=user).first()
    if (
        current is not None
        and current.stripe_subscription_id not in ("", data["id"])
        and current.status not in ENDED
        and data["status"] in ENDED
    ):
        # An old subscription ending does not end the tenant's newer, live one.
        logger.info(
            "Stripe subscription %s ended; user %s stays on %s.",
            data["id"],
            user.pk,
            current.stripe_subscription_id,
        )
        return current
    return services.subscription_set(
        user=user,
        plan_key=plans[stripe_id(item["price"])].key,
        status=data["status"],
        stripe_customer_id=stripe_id(data.get("customer")),
        stripe_subscription_id=data["id"],
        current_period_start=_time(item.get("current_period_start")),
        current_period_end=_time(item.get("current_period_end")),
        cancel_at_period_end=bool(data.get("cancel_at_period_end")),
    )


def _problem(data: dict[str, Any], reason: str, detail: str, event_id: str) -> None:
    StripeSyncProblem.objects.update_or_create(
        stripe_subscription_id=data["id"],
        defaults={
            "stripe_customer_id": stripe_id(data.get("customer")),
            "reason": reason,
            "detail": detail,
            "stripe_event_id": event_id,
        },
    )
    logger.warning("Stripe subscription %s not applied (%s): %s", data["id"], reason, detail)
    return None


def subscriptions_resync(*, user: Any = None) -> list[tuple[str, Subscription | None]]:
    """Re-read every Stripe subscription (of one tenant's customers, with ``user``) and
    apply each, oldest first: recovery after missed webhooks."""
    if user is None:
        filters: list[dict[str, str]] = [{}]
    else:
        customers = set(Customer.objects.filter(subscriber=user).values_list("id", flat=True))
        own = Subscription.objects.filter(user=user).exclude(stripe_customer_id="")
        customers.update(own.values_list("stripe_customer_id", flat=True))
        filters = [{"customer": customer} for customer in sorted(customers)]
    found = []
    for params in filters:
        listing = stripe.Subscription.list(status="all", api_key=api_key(), **params)
        found.extend(listing.auto_paging_iter())
    found.sort(key=lambda subscription: subscription["created"])
    return [
        (subscription["id"], subscription_sync(subscription["id"], refresh=True))
        for subscription in found
    ]


def invoice_subscription_id(data: dict[str, Any]) -> str:
    """The subscription of an invoice: under ``parent.subscription_details`` in current
    API versions, at the top in older ones."""
    details = (data.get("parent") or {}).get("subscription_details") or {}
    return stripe_id(details.get("subscription")) or stripe_id(data.get("subscription"))


# --- tenant → Stripe -------------------------------------------------------------------


def _call(method: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return method(*args, api_key=api_key(), **kwargs)
    except stripe.StripeError as error:
        logger.warning("Stripe refused %s: %s", getattr(method, "__qualname__", method), error)
        raise StripeUnavailable(
            f"Stripe refused the request: {error.user_message or error}"
        ) from None


def customer_for(user: Any) -> str:
    """The tenant's Stripe customer id, created (linked to the tenant in its metadata)
    when it has none."""
    subscription = Subscription.objects.filter(user=user).exclude(stripe_customer_id="").first()
    if subscription:
        return subscription.stripe_customer_id
    existing = Customer.objects.filter(subscriber=user, livemode=djstripe_settings.STRIPE_LIVE_MODE)
    if customer := existing.first():
        return customer.id
    try:
        customer, _ = Customer.get_or_create(
            subscriber=user, metadata={billing_settings.STRIPE_METADATA_KEY: str(user.pk)}
        )
    except stripe.StripeError as error:
        raise StripeUnavailable(
            f"Stripe refused the request: {error.user_message or error}"
        ) from None
    return customer.id


def checkout_create(*, user: Any, price_id: str, success_url: str, cancel_url: str) -> str:
    """A Checkout Session in subscription mode for an active plan's price; its URL."""
    if not Plan.objects.filter(stripe_price_id=price_id, active=True).exists():
        raise InvalidInput({"price_id": [f"{price_id!r} is not the price of a plan."]})
    key = billing_settings.STRIPE_METADATA_KEY
    session = _call(
        stripe.checkout.Session.create,
        mode="subscription",
        customer=customer_for(user),
        line_items=[{"price": price_id, "quantity": 1}],
        success_url=success_url,
        cancel_url=cancel_url,
        client_reference_id=str(user.pk),
        metadata={key: str(user.pk)},
        subscription_data={"metadata": {key: str(user.pk)}},
    )
    return session["url"]


def portal_create(*, user: Any, return_url: str) -> str:
    subscription = Subscription.objects.filter(user=user).exclude(stripe_customer_id="").first()
    if subscription is None:
        raise Conflict("There is no Stripe customer yet: subscribe through checkout first.")
    session = _call(
        stripe.billing_portal.Session.create,
        customer=subscription.stripe_customer_id,
        return_url=return_url,
    )
    return session["url"]


def plan_change(*, user: Any, plan_key: str) -> Subscription:
    """Move the tenant to another plan. The open usage record is recorded and a new one
    opens on the new plan (``cycles.follow``). A Stripe-backed subscription changes its
    item's price on Stripe first, then Stripe's answer is applied."""
    subscription = Subscription.objects.select_related("plan").filter(user=user).first()
    if subscription is None or subscription.status in ENDED:
        raise Conflict("There is no live subscription to change.")
    plan = Plan.objects.filter(key=plan_key).first()
    if plan is None or not plan.active:
        raise InvalidInput({"plan_key": [f"No active plan with key {plan_key!r}."]})
    if not subscription.stripe_subscription_id:
        return services.subscription_set(user=user, plan_key=plan.key)
    if not plan.stripe_price_id:
        raise InvalidInput({"plan_key": [f"Plan {plan.key!r} has no Stripe price."]})
    sid = subscription.stripe_subscription_id
    items = _call(stripe.Subscription.retrieve, sid)["items"]["data"]
    ours = subscription.plan.stripe_price_id
    item = next((i for i in items if stripe_id(i["price"]) == ours), items[0] if items else None)
    if item is None:
        raise Conflict(f"Stripe subscription {sid} has no item to change.")
    _call(
        stripe.Subscription.modify, sid, items=[{"id": item["id"], "price": plan.stripe_price_id}]
    )
    applied = subscription_sync(sid)
    if applied is None:
        raise Conflict("Stripe's answer could not be applied; see the Stripe sync problems.")
    return applied


def subscription_cancel(*, user: Any, when: str = "end") -> Subscription:
    """Cancel at the period's end (``"end"``) or now. A Stripe-backed subscription is
    cancelled on Stripe, then Stripe's answer is applied; any other changes here only."""
    subscription = Subscription.objects.filter(user=user).first()
    if subscription is None or subscription.status in ENDED:
        raise Conflict("There is no subscription to cancel.")
    if not subscription.stripe_subscription_id:
        changes = (
            {"status": SubscriptionStatus.CANCELED}
            if when == "now"
            else {"cancel_at_period_end": True}
        )
        return services.subscription_set(user=user, plan_key=subscription.plan.key, **changes)
    sid = subscription.stripe_subscription_id
    if when == "now":
        _call(stripe.Subscription.cancel, sid)
    else:
        _call(stripe.Subscription.modify, sid, cancel_at_period_end=True)
    applied = subscription_sync(sid)
    if applied is None:
        raise Conflict("Stripe's answer could not be applied; see the Stripe sync problems.")
    return applied
