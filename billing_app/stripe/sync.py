"""Stripe → customer: apply what Stripe holds now for a subscription.

:func:`subscription_sync` reads the subscription from Stripe outside any transaction,
applies it in a short one through ``subscription_set`` (as the operator API and the admin
do), then reads it again: when Stripe moved on meanwhile (a concurrent delivery of an
older event may have applied an older state after ours), it applies the newer state and
looks once more. So whatever the order, duplication or concurrency of webhooks, the
customer ends on Stripe's current state, and no lock is held while Stripe answers.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from django.db import transaction
from djstripe.models import Customer as StripeCustomer
from djstripe.models import Session as CheckoutSession
from djstripe.models import Subscription as StripeSubscription
from stripe.params import SubscriptionListParams

from ..conf import billing_settings, customer_model, stripe_api_key
from ..exceptions import StripeUnavailable
from ..metering.credits import credits_grant
from ..models import ENDED_STATUSES, CreditGrant, CreditPack, Plan, Problem, Subscription
from ..problems import problem_clear, problem_record
from ..subscriptions.services import subscription_set

logger = logging.getLogger(__name__)

CONFIRMATIONS = 4
Kind = Problem.Kind


def stripe_id(value: Any) -> str:
    """A Stripe reference, expanded or not, as its id ("" for none)."""
    value = value.get("id") if isinstance(value, dict) else value
    return value if isinstance(value, str) else ""


def plain(data: Any) -> Any:
    """A Stripe answer as plain dicts and lists. stripe-python's objects are not dicts:
    ``stripe_id`` and the item checks would see no price in them."""
    return data.to_dict() if isinstance(data, stripe.StripeObject) else data


def _time(timestamp: Any) -> datetime | None:
    return datetime.fromtimestamp(timestamp, tz=UTC) if isinstance(timestamp, int) else None


def retrieve(stripe_subscription_id: str) -> dict[str, Any]:
    try:
        return plain(stripe.Subscription.retrieve(stripe_subscription_id, api_key=stripe_api_key()))
    except stripe.StripeError as error:
        logger.warning("Stripe refused to read %s: %s", stripe_subscription_id, error)
        raise StripeUnavailable(f"Stripe could not be read: {type(error).__name__}") from None


def subscription_sync(
    stripe_subscription_id: str,
    *,
    event_id: str = "",
    data: dict[str, Any] | stripe.StripeObject | None = None,
    customer: Any = None,
) -> Subscription | None:
    """Apply Stripe's current state of a subscription to its customer (``data``, when
    given, is a state Stripe has just answered). Answers the customer's subscription, or
    None when it could not be applied (recorded as a Problem)."""
    data = plain(data) if data is not None else retrieve(stripe_subscription_id)
    for _ in range(CONFIRMATIONS):
        applied = subscription_apply(data, event_id=event_id, customer=customer)
        again = retrieve(stripe_subscription_id)
        if state(again) == state(data):
            return applied
        data = again
    raise StripeUnavailable(f"Stripe subscription {stripe_subscription_id} kept changing.")


def state(data: dict[str, Any]) -> tuple[Any, ...]:
    """What of a Stripe subscription we apply: two reads with the same state apply alike."""
    items = tuple(
        (
            stripe_id(item.get("price")),
            item.get("quantity"),
            item.get("current_period_start"),
            item.get("current_period_end"),
        )
        for item in (data.get("items") or {}).get("data") or []
    )
    return (
        data.get("status"),
        data.get("cancel_at_period_end"),
        data.get("billing_cycle_anchor"),
        data.get("ended_at"),
        data.get("trial_end"),
        stripe_id(data.get("customer")),
        items,
    )


def subscription_apply(
    data: dict[str, Any], *, event_id: str = "", customer: Any = None
) -> Subscription | None:
    """Apply one state of a Stripe subscription, in one transaction."""
    data = plain(data)
    sid = data["id"]
    with transaction.atomic():
        customer = customer if customer is not None else customer_of(data)
        if customer is None:
            key = billing_settings.STRIPE_METADATA_KEY
            problem_record(
                kind=Kind.STRIPE_NO_CUSTOMER,
                subject=f"stripe:{sid}",
                detail=f"Stripe customer {stripe_id(data.get('customer'))} is linked to no "
                f"customer. Set metadata {key}=<customer id> on the Stripe customer or "
                "subscription (or link the dj-stripe customer to a subscriber), then retry.",
                stripe_event_id=event_id,
            )
            return None
        current = Subscription.objects.select_for_update().filter(customer=customer).first()
        item, plan = _plan_item(data)
        if plan is None:
            prices = [stripe_id(i.get("price")) or "(no price)" for i in _items(data)]
            problem_record(
                kind=Kind.STRIPE_NO_PLAN,
                subject=f"stripe:{sid}",
                detail=f"No plan has the price {' or '.join(prices) or '(none)'} of customer "
                f"{customer.pk}'s subscription. Set it as a plan's stripePriceId, then retry.",
                stripe_event_id=event_id,
            )
            return None
        if current is not None and not _takes_over(current, data):
            return current
        problem_clear(subject=f"stripe:{sid}")
        return subscription_set(
            customer=customer,
            plan_key=plan.key,
            status=data["status"],
            stripe_customer_id=stripe_id(data.get("customer")),
            stripe_subscription_id=sid,
            current_period_start=_time(item.get("current_period_start")),
            current_period_end=_time(item.get("current_period_end")),
            cancel_at_period_end=bool(data.get("cancel_at_period_end")),
            billing_cycle_anchor=_time(data.get("billing_cycle_anchor")),
            started_at=_time(data.get("start_date")),
            ended_at=_time(data.get("ended_at")) or _time(data.get("canceled_at")),
            seats=_seats(item),
            trial_start=_time(data.get("trial_start")),
            trial_end=_time(data.get("trial_end")),
            source="stripe",
        )


def _items(data: dict[str, Any]) -> list[dict[str, Any]]:
    items = (data.get("items") or {}).get("data") or []
    return [item for item in items if isinstance(item, dict)]


def _plan_item(data: dict[str, Any]) -> tuple[dict[str, Any], Plan | None]:
    """The item whose price is a plan's, and that plan. An item without a price never
    matches (a plan without a Stripe price is not a Stripe plan)."""
    items = _items(data)
    prices = [price for item in items if (price := stripe_id(item.get("price")))]
    plans = {plan.stripe_price_id: plan for plan in Plan.objects.filter(stripe_price_id__in=prices)}
    for item in items:
        plan = plans.get(stripe_id(item.get("price")))
        if plan is not None:
            return item, plan
    return {}, None


def _seats(item: dict[str, Any]) -> int:
    quantity = item.get("quantity")
    return quantity if isinstance(quantity, int) and quantity >= 1 else 1


def _takes_over(current: Subscription, data: dict[str, Any]) -> bool:
    """Whether a Stripe subscription may replace the one the customer is on. A customer
    follows one Stripe subscription: its own again, or another one that is live when its
    own has ended. Of two live ones, the one created last wins, whatever order their events
    come in (Checkout refuses a second one; the dashboard does not)."""
    ours = current.stripe_subscription_id
    if not ours or ours == data["id"]:
        return True
    if data["status"] in ENDED_STATUSES:
        logger.info("Stripe subscription %s ended; its customer stays on %s.", data["id"], ours)
        return False
    if current.ended:
        return True
    ours_created = (
        StripeSubscription.objects.filter(id=ours).values_list("created", flat=True).first()
    )
    theirs = _time(data.get("created"))
    newer = ours_created is None or (
        theirs is not None and (theirs, data["id"]) > (ours_created, ours)
    )
    problem_record(
        kind=Kind.STRIPE_TWO_LIVE,
        subject=f"stripe:{ours if newer else data['id']}",
        detail=f"Customer {current.customer_id} has two live Stripe subscriptions, {ours} and "
        f"{data['id']}; it follows the one created last. Cancel the other on Stripe.",
    )
    return newer


def customer_of(data: dict[str, Any]) -> Any:
    """The customer a Stripe subscription belongs to, or None. In order: the dj-stripe
    customer's subscriber; our metadata key on the subscription, then on the customer; our
    own subscription row for it; the ``client_reference_id`` of the Checkout Session that
    created it."""
    Customer = customer_model()
    stripe_customer_id = stripe_id(data.get("customer"))
    linked = StripeCustomer.objects.filter(id=stripe_customer_id).first()
    if linked is not None and linked.subscriber_id is not None:
        return Customer._default_manager.filter(pk=linked.subscriber_id).first()
    key = billing_settings.STRIPE_METADATA_KEY
    for metadata in (data.get("metadata"), linked.metadata if linked else None):
        if isinstance(metadata, dict) and metadata.get(key):
            found = _customer(metadata[key])
            if found is not None:
                return found
    own = Subscription.objects.filter(stripe_subscription_id=data["id"]).first()
    if own is not None:
        return own.customer
    session = CheckoutSession.objects.filter(subscription_id=data["id"]).first()
    if session is not None and session.client_reference_id:
        return _customer(session.client_reference_id)
    return None


def _customer(value: Any) -> Any:
    Customer = customer_model()
    try:
        return Customer._default_manager.filter(pk=Customer._meta.pk.to_python(value)).first()
    except Exception:
        return None


def subscriptions_resync(*, customer: Any = None) -> list[tuple[str, str, Subscription | None]]:
    """Re-read every Stripe subscription (of one customer's Stripe customers, with
    ``customer``) and apply each, oldest first: recovery after missed webhooks. Answers
    (subscription id, its status on Stripe, the customer's subscription after it)."""
    every: SubscriptionListParams = {"status": "all", "api_key": stripe_api_key()}
    if customer is None:
        filters = [every]
    else:
        ids = set(StripeCustomer.objects.filter(subscriber=customer).values_list("id", flat=True))
        own = Subscription.objects.filter(customer=customer).exclude(stripe_customer_id="")
        ids.update(own.values_list("stripe_customer_id", flat=True))
        filters = [{**every, "customer": stripe_customer} for stripe_customer in sorted(ids)]
    found: list[stripe.Subscription] = []
    try:
        for params in filters:
            found.extend(stripe.Subscription.list(**params).auto_paging_iter())
    except stripe.StripeError as error:
        raise StripeUnavailable(f"Stripe could not be read: {type(error).__name__}") from None
    found.sort(key=lambda subscription: (subscription["created"], subscription["id"]))
    return [
        (data["id"], data["status"], subscription_sync(data["id"], data=data)) for data in found
    ]


def invoice_subscription_id(data: dict[str, Any]) -> str:
    """The subscription of an invoice: under ``parent.subscription_details`` in current
    API versions, at the top in older ones."""
    details = (data.get("parent") or {}).get("subscription_details") or {}
    return stripe_id(details.get("subscription")) or stripe_id(data.get("subscription"))


SUBSCRIPTION_EVENTS = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
        "customer.subscription.trial_will_end",
    }
)


def event_subscription_id(event: dict[str, Any]) -> str:
    """The subscription a webhook event is about, or "" for events we do not follow."""
    kind = event.get("type")
    obj = (event.get("data") or {}).get("object") or {}
    if kind in SUBSCRIPTION_EVENTS:
        return stripe_id(obj.get("id"))
    if kind == "checkout.session.completed" and obj.get("mode") == "subscription":
        return stripe_id(obj.get("subscription"))
    if kind in {"invoice.paid", "invoice.payment_failed", "invoice.payment_succeeded"}:
        return invoice_subscription_id(obj)
    return ""


def event_apply(event: dict[str, Any]) -> Subscription | None:
    """Apply a verified webhook event: the subscription it is about, as Stripe holds it
    now (never the event's own, possibly stale, copy); or the credit pack a paid Checkout
    Session bought."""
    obj = (event.get("data") or {}).get("object") or {}
    if event.get("type") in PAID_SESSION_EVENTS and obj.get("mode") == "payment":
        credit_purchase_apply(stripe_id(obj.get("id")))
        return None
    sid = event_subscription_id(event)
    if not sid:
        return None
    return subscription_sync(sid, event_id=str(event.get("id", "")))


# The metadata key, on a credit pack's Checkout Session, that names the pack.
PACK_METADATA_KEY = "billing_credit_pack"
PAID_SESSION_EVENTS = frozenset(
    {"checkout.session.completed", "checkout.session.async_payment_succeeded"}
)


def credit_purchase_apply(session_id: str) -> CreditGrant | None:
    """Give the credits of a paid credit-pack Checkout Session, once, whatever the number
    and order of its events: the session is read from Stripe, and the grant is keyed by
    the session's id."""
    try:
        session = plain(stripe.checkout.Session.retrieve(session_id, api_key=stripe_api_key()))
    except stripe.StripeError as error:
        logger.warning("Stripe refused to read %s: %s", session_id, error)
        raise StripeUnavailable(f"Stripe could not be read: {type(error).__name__}") from None
    metadata = session.get("metadata") or {}
    pack = CreditPack.objects.filter(key=metadata.get(PACK_METADATA_KEY) or "").first()
    customer = _customer(metadata.get(billing_settings.STRIPE_METADATA_KEY))
    if session.get("payment_status") != "paid" or pack is None or customer is None:
        return None
    now = datetime.now(tz=UTC)
    return credits_grant(
        customer_id=customer.pk,
        amount=pack.credits,
        source=CreditGrant.Source.PURCHASE,
        source_ref=f"checkout:{session_id}",
        reason=f"Bought pack {pack.key}",
        expires_at=now + timedelta(days=pack.expires_after_days)
        if pack.expires_after_days
        else None,
    )
