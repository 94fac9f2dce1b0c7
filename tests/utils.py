"""Helpers shared by the test files (fixtures live in conftest.py)."""

from __future__ import annotations

import copy
import itertools
import json
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone

from billing_app.metering import services as metering
from billing_app.metering.ledger import Reservation
from billing_app.models import BillingPeriod, KitAssignment, Plan, Subscription

from .stripe_stub import sign

# --- time ------------------------------------------------------------------------------


def at(text: str) -> datetime:
    """``at("2026-01-31 10:00")``: an aware UTC instant, for tests that name their days."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def ts(instant: datetime) -> int:
    """A Stripe timestamp."""
    return int(instant.timestamp())


class Clock:
    """``django.utils.timezone.now`` under the test's control (the ``clock`` fixture):
    the app reads the time only through it, so services, enforcement and serializers all
    see the same instant."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def set(self, now: datetime | str) -> datetime:
        self.now = at(now) if isinstance(now, str) else now
        return self.now

    def __call__(self) -> datetime:
        return self.now


# --- Stripe ----------------------------------------------------------------------------


def deliver(client: Any, event: dict[str, Any], *, signature: str | None = None) -> Any:
    """POST ``event`` to the webhook endpoint: raw JSON, signed as Stripe signs it."""
    body = json.dumps(event)
    return client.post(
        "/billing/webhook",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(body) if signature is None else signature,
    )


def stripe_customer_for(stripe_stub: Any, customer: Any, **values: Any) -> dict[str, Any]:
    """A Stripe customer that dj-stripe links to ``customer`` (its subscriber metadata)."""
    return stripe_stub.customer(metadata={"djstripe_subscriber": str(customer.pk)}, **values)


def subscribe_on_stripe(
    stripe_stub: Any, customer: Any, price: str = "price_pro", **values: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Stripe customer and subscription of ``customer``, applied by its webhook."""
    from django.test import Client

    stripe_customer = stripe_customer_for(stripe_stub, customer)
    sub = stripe_stub.subscription(customer=stripe_customer["id"], price=price, **values)
    response = deliver(Client(), stripe_stub.event("customer.subscription.created", sub))
    assert response.status_code == 200, response.content
    return stripe_customer, sub


def item_set(stripe_stub: Any, sub_id: str, **values: Any) -> dict[str, Any]:
    """Set fields of the subscription's item (``quantity``, period bounds, ``price``): the
    stand-in's ``set_price`` changes only the price."""
    item = stripe_stub.objects[sub_id]["items"]["data"][0]
    item.update(values)
    return item


def renew(stripe_stub: Any, sub_id: str, start: datetime, end: datetime) -> dict[str, Any]:
    """Stripe renews the subscription: its item's period is now ``[start, end)``."""
    item_set(stripe_stub, sub_id, current_period_start=ts(start), current_period_end=ts(end))
    return stripe_stub.objects[sub_id]


def _time(timestamp: int | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, tz=UTC)


def state_of(customer: Any) -> dict[str, Any]:
    """What the app shows of a customer's subscription, in the terms of :func:`expected`.
    ``period`` is the span of its latest billing period together with the rows a plan
    change split from it (where the change was heard of, which no Stripe object says);
    ``period_plan`` the plan of the period in force now (None once it ended)."""
    sub = Subscription.objects.select_related("plan").get(customer=customer)
    kit = KitAssignment.objects.select_related("kit").get(customer=customer).kit.key
    rows = list(BillingPeriod.objects.filter(subscription=sub).select_related("plan"))
    rows.sort(key=lambda row: row.start, reverse=True)
    span = rows[:1]
    for row in rows[1:]:
        if row.end != span[-1].start or row.end_reason != BillingPeriod.EndReason.PLAN_CHANGE:
            break
        span.append(row)
    now = timezone.now()
    in_force = next((row for row in rows if row.start <= now < row.end), None)
    return {
        "plan": sub.plan.key,
        "status": sub.status,
        "sub": sub.stripe_subscription_id,
        "customer": sub.stripe_customer_id,
        "period": (span[-1].start, span[0].end) if span else None,
        "period_plan": in_force.plan.key if in_force else None,
        "cancel_at_period_end": sub.cancel_at_period_end,
        "ended_at": sub.ended_at,
        "seats": sub.seats,
        "kit": kit,
    }


def expected(stripe_sub: dict[str, Any]) -> dict[str, Any]:
    """What the customer must show for a Stripe subscription object: its plan (by price)
    and that plan's kit, its status, and its period (cut where it ended)."""
    item = stripe_sub["items"]["data"][0]
    plan = Plan.objects.select_related("account_kit").get(stripe_price_id=item["price"]["id"])
    ended_at = _time(stripe_sub.get("ended_at"))
    start = _time(item["current_period_start"])
    end = _time(item["current_period_end"])
    return {
        "plan": plan.key,
        "status": stripe_sub["status"],
        "sub": stripe_sub["id"],
        "customer": stripe_sub["customer"],
        "period": (start, min(end, ended_at) if ended_at else end),
        "period_plan": None if ended_at and ended_at <= timezone.now() else plan.key,
        "cancel_at_period_end": stripe_sub["cancel_at_period_end"],
        "ended_at": ended_at,
        "seats": item.get("quantity") or 1,
        "kit": plan.account_kit.key if plan.account_kit else None,
    }


def periods(customer: Any) -> list[tuple[datetime, datetime, str, str]]:
    """The customer's billing periods, oldest first: (start, end, source, plan key)."""
    rows = BillingPeriod.objects.filter(customer=customer).select_related("plan")
    return [(p.start, p.end, p.source, p.plan.key) for p in rows.order_by("start")]


def garble_next_answer(stripe_stub: Any, method: str, path: str, answer: dict[str, Any]) -> None:
    """Stripe does the next ``method path`` request, but what reaches us is ``answer``
    (a proxy's page, a cut body): the stand-in keeps the object as Stripe changed it."""

    def after(request: Any, status: int, body: dict[str, Any]) -> None:
        if request.method != method or request.path != path:
            return
        stripe_stub.after = None
        if stripe_stub.objects.get(body.get("id")) is body:
            stripe_stub.objects[body["id"]] = copy.deepcopy(body)
        body.clear()
        body.update(answer)

    stripe_stub.after = after


def refuse(stripe_stub: Any, method: str, path: str, message: str) -> None:
    """Stripe fails every ``method path`` request (an ``api_error`` saying ``message``)."""

    def before(request: Any) -> None:
        if request.method == method and request.path == path:
            raise RuntimeError(message)

    stripe_stub.before = before


# --- usage and periods ----------------------------------------------------------------


def use(customer: Any, quantity: int, at: datetime, *, primitive: str = "seo") -> Reservation:
    """Usage that happened at ``at``, recorded as reported usage is: past any quota (it
    happened already) and at any age (the API's age limit is tested on its own)."""
    return metering.usage_reserve(
        customer_id=customer.pk,
        primitive=primitive,
        quantity=quantity,
        at=at,
        enforce=False,
        live=False,
    )


def periods_of(customer: Any) -> list[BillingPeriod]:
    """The customer's billing periods, oldest first."""
    return list(
        BillingPeriod.objects.filter(customer=customer).select_related("plan").order_by("start")
    )


def assert_tiled(periods: list[BillingPeriod]) -> None:
    """Each period starts where the one before it ended: no gap, no overlap."""
    assert periods, "no billing period at all"
    for earlier, later in itertools.pairwise(periods):
        assert earlier.end == later.start, (earlier, later)
    for period in periods:
        assert period.start < period.end
