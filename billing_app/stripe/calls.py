"""Customer (or operator) → Stripe: Checkout, the billing portal, plan changes,
cancellation and reactivation.

Each change is asked of Stripe first, outside any transaction; Stripe's answer (the
subscription as it now is) is then applied here. A Stripe error is ``StripeUnavailable``
and changes nothing here. When Stripe accepted but applying its answer here fails, the
subscription is recorded as a Problem for the next sync and ``StripeNotApplied`` says so:
the customer still ends on Stripe's state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import stripe
from djstripe.models import Customer as StripeCustomer
from djstripe.settings import djstripe_settings

from ..conf import billing_settings, stripe_api_key
from ..exceptions import Conflict, InvalidInput, StripeNotApplied, StripeUnavailable
from ..models import CreditPack, Plan, Problem, Subscription
from ..problems import problem_record
from ..subscriptions import services as subscriptions
from ..subscriptions.selectors import trial_taken
from .sync import PACK_METADATA_KEY, plain, stripe_id, subscription_apply

logger = logging.getLogger(__name__)


def _call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Stripe's answer. Stripe refusing the request (a subscription canceled there while
    it is live here, a price it does not have) is a conflict with Stripe's state; Stripe
    failing or out of reach is a bad gateway. Either way nothing changed here."""
    try:
        return method(*args, api_key=stripe_api_key(), **kwargs)
    except stripe.StripeError as error:
        # The detail (hosts, request ids, support addresses) goes to the log, not the client.
        logger.warning("Stripe refused %s: %s", getattr(method, "__qualname__", method), error)
        if isinstance(error, stripe.InvalidRequestError):
            raise Conflict(
                "Stripe refused this for the subscription as Stripe holds it; nothing was changed."
            ) from None
        raise StripeUnavailable("Stripe could not do this now; nothing was changed.") from None


def customer_for(customer: Any) -> str:
    """The customer's Stripe customer id, created (linked to it by dj-stripe's subscriber
    and our metadata key) when it has none."""
    subscription = Subscription.objects.filter(customer=customer).exclude(stripe_customer_id="")
    if row := subscription.first():
        return row.stripe_customer_id
    livemode = djstripe_settings.STRIPE_LIVE_MODE
    if linked := StripeCustomer.objects.filter(subscriber=customer, livemode=livemode).first():
        return linked.id
    try:
        created, _ = StripeCustomer.get_or_create(
            subscriber=customer,
            metadata={billing_settings.STRIPE_METADATA_KEY: str(customer.pk)},
        )
    except stripe.StripeError as error:
        logger.warning("Stripe refused to create a customer: %s", error)
        raise StripeUnavailable("Stripe could not do this now; nothing was changed.") from None
    return created.id


def checkout_create(*, customer: Any, price_id: str, success_url: str, cancel_url: str) -> str:
    """A Checkout Session in subscription mode for an active plan's price; its URL. A
    customer with a live Stripe subscription changes plan instead: Checkout would make a
    second subscription."""
    plan = Plan.objects.filter(stripe_price_id=price_id, active=True).first() if price_id else None
    if plan is None:
        raise InvalidInput({"price_id": [f"{price_id!r} is not the price of an active plan."]})
    current = Subscription.objects.filter(customer=customer).first()
    if current is not None and current.stripe_subscription_id and not current.ended:
        raise Conflict(
            "You have a live subscription already: change its plan instead.",
            fields={"price_id": ["A live subscription exists; change its plan instead."]},
        )
    key = billing_settings.STRIPE_METADATA_KEY
    stripe_customer = customer_for(customer)
    subscription_data: dict[str, Any] = {"metadata": {key: str(customer.pk)}}
    # One trial per customer: none for one that had it, here or on Stripe.
    if plan.trial_days and not trial_taken(customer=customer, stripe_customer_id=stripe_customer):
        subscription_data["trial_period_days"] = plan.trial_days
    session = _call(
        stripe.checkout.Session.create,
        mode="subscription",
        customer=stripe_customer,
        line_items=[{"price": price_id, "quantity": 1}],
        success_url=success_url,
        cancel_url=cancel_url,
        client_reference_id=str(customer.pk),
        metadata={key: str(customer.pk)},
        subscription_data=subscription_data,
    )
    return session["url"]


def portal_create(*, customer: Any, return_url: str) -> str:
    subscription = Subscription.objects.filter(customer=customer).exclude(stripe_customer_id="")
    row = subscription.first()
    if row is None:
        raise Conflict("There is no Stripe customer yet: subscribe through Checkout first.")
    session = _call(
        stripe.billing_portal.Session.create, customer=row.stripe_customer_id, return_url=return_url
    )
    return session["url"]


def _apply_answer(customer: Any, answer: Any, sid: str) -> Subscription:
    """Apply the subscription ``sid`` as Stripe answered with it. Whatever fails here, the
    customer must end on Stripe's state: the subscription is recorded for the next sync
    (by the id we asked about: an answer that fails to apply may not carry it)."""
    try:
        applied = subscription_apply(answer, customer=customer)
    except Exception as error:
        logger.exception("Stripe accepted a change to %s that was not applied here", sid)
        problem_record(
            kind=Problem.Kind.STRIPE_NOT_APPLIED,
            subject=f"stripe:{sid}",
            detail=f"Stripe accepted a change, applying it here failed "
            f"({type(error).__name__}). Retry, or run billing_sync_subscriptions.",
        )
        raise StripeNotApplied(
            "Stripe accepted the change; it will show here after the next sync."
        ) from None
    if applied is None:
        raise StripeNotApplied("Stripe accepted the change; see the billing problems to apply it.")
    return applied


def plan_change(*, customer: Any, plan_key: str) -> Subscription:
    """Move the customer to another plan. The billing period is split at the change, the
    part on the old plan recorded when it closes. A Stripe-backed subscription changes its
    item's price on Stripe first, then Stripe's answer is applied."""
    subscription = Subscription.objects.select_related("plan").filter(customer=customer).first()
    if subscription is None or subscription.ended:
        raise Conflict("There is no live subscription to change.")
    plan = Plan.objects.filter(key=plan_key).first()
    if plan is None or not plan.active:
        raise InvalidInput({"plan_key": [f"No active plan with key {plan_key!r}."]})
    if not subscription.stripe_subscription_id:
        return subscriptions.subscription_set(customer=customer, plan_key=plan.key)
    if not plan.stripe_price_id:
        raise InvalidInput({"plan_key": [f"Plan {plan.key!r} has no Stripe price."]})
    sid = subscription.stripe_subscription_id
    items = (plain(_call(stripe.Subscription.retrieve, sid)).get("items") or {}).get("data") or []
    ours = subscription.plan.stripe_price_id
    item = next(
        (i for i in items if stripe_id(i.get("price")) == ours), items[0] if items else None
    )
    if item is None:
        raise Conflict(f"Stripe subscription {sid} has no item to change.")
    answer = _call(
        stripe.Subscription.modify,
        sid,
        items=[{"id": item["id"], "price": plan.stripe_price_id}],
    )
    return _apply_answer(customer, answer, sid)


def subscription_cancel(*, customer: Any, when: str = "end") -> Subscription:
    """Cancel at the period's end (``"end"``) or now. A Stripe-backed subscription is
    cancelled on Stripe, then Stripe's answer is applied."""
    subscription = Subscription.objects.filter(customer=customer).first()
    if subscription is None or subscription.ended:
        raise Conflict("There is no subscription to cancel.")
    if not subscription.stripe_subscription_id:
        return subscriptions.subscription_cancel_here(customer=customer, when=when)
    sid = subscription.stripe_subscription_id
    if when == "now":
        answer = _call(stripe.Subscription.cancel, sid)
    else:
        answer = _call(stripe.Subscription.modify, sid, cancel_at_period_end=True)
    return _apply_answer(customer, answer, sid)


def subscription_reactivate(*, customer: Any) -> Subscription:
    """Undo a pending cancellation at the period's end."""
    subscription = Subscription.objects.filter(customer=customer).first()
    if subscription is None or subscription.ended:
        raise Conflict("There is no live subscription to reactivate.")
    if not subscription.stripe_subscription_id:
        return subscriptions.subscription_reactivate_here(customer=customer)
    if not subscription.cancel_at_period_end:
        raise Conflict("The subscription is not set to cancel.")
    sid = subscription.stripe_subscription_id
    answer = _call(stripe.Subscription.modify, sid, cancel_at_period_end=False)
    return _apply_answer(customer, answer, sid)


def credit_pack_checkout_create(
    *, customer: Any, pack_key: str, success_url: str, cancel_url: str
) -> str:
    """A Checkout Session in payment mode for a credit pack; its URL. The credits are
    given by the webhook that says the session is paid (``stripe.sync.event_apply``)."""
    pack = CreditPack.objects.filter(key=pack_key, active=True).exclude(stripe_price_id="").first()
    if pack is None:
        raise InvalidInput({"pack_key": [f"{pack_key!r} is not a credit pack on sale."]})
    key = billing_settings.STRIPE_METADATA_KEY
    metadata = {key: str(customer.pk), PACK_METADATA_KEY: pack.key}
    session = _call(
        stripe.checkout.Session.create,
        mode="payment",
        customer=customer_for(customer),
        line_items=[{"price": pack.stripe_price_id, "quantity": 1}],
        success_url=success_url,
        cancel_url=cancel_url,
        client_reference_id=str(customer.pk),
        metadata=metadata,
    )
    return session["url"]
