"""Helpers shared by the test files (fixtures live in conftest.py)."""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.cache.backends.base import BaseCache
from django.db import connection
from django.test import Client
from django.utils import timezone

from billing_app.conf import customer_is_user, customer_model
from billing_app.entitlements import entitlement_for, version_of
from billing_app.exceptions import InvalidInput
from billing_app.metering import services as metering
from billing_app.metering.ledger import Reservation
from billing_app.metering.selectors import usage_rollup
from billing_app.metering.services import customer_key_is_integer
from billing_app.models import (
    AccountKit,
    BillingPeriod,
    KitAssignment,
    Plan,
    PlanFeature,
    PlanQuota,
    Seat,
    Subscription,
    UsageCounter,
    UsageEvent,
)
from billing_app.periods import Window

from .factories import UserFactory
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


def synced_price(stripe_stub: Any, price_id: str, currency: str) -> Any:
    """A Stripe price in ``currency``, as dj-stripe has it once synced."""
    from djstripe.models import Price

    stripe_stub.price(price_id, currency=currency)
    return Price.sync_from_stripe_data(Price(id=price_id).api_retrieve())


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


def make_invoice(
    stripe_stub: Any,
    stripe_customer: dict[str, Any],
    *,
    created: int,
    status: str = "paid",
    total: int = 4900,
) -> Any:
    """An invoice of ``stripe_customer`` at Stripe, synced here as dj-stripe syncs one."""
    from djstripe.models import Invoice

    invoice = stripe_stub.make(
        "invoice",
        customer=stripe_customer["id"],
        created=created,
        status=status,
        total=total,
        amount_paid=total if status == "paid" else 0,
        currency="usd",
        invoice_pdf=f"https://pay.stripe.com/invoice/{created}/pdf",
        status_transitions={
            "finalized_at": created,
            "marked_uncollectible_at": None,
            "paid_at": created + 60 if status == "paid" else None,
            "voided_at": None,
        },
        lines={"object": "list", "data": [], "has_more": False, "url": "/v1/invoices/x/lines"},
    )
    # Synced as a webhook would: read back from Stripe, not from the dict above.
    return Invoice.sync_from_stripe_data(Invoice(id=invoice["id"]).api_retrieve())


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


# --- clients, windows, concurrency, caches -------------------------------------------


def bearer(key: str, **headers: str) -> Client:
    """A plain Django test client sending ``Authorization: Bearer <key>`` (and ``headers``)."""
    return Client(headers={"Authorization": f"Bearer {key}", **headers})


def messages_of(response: Any) -> list[str]:
    """The messages (django.contrib.messages) the request that answered ``response`` left
    for the next page."""
    from django.contrib.messages import get_messages

    return [str(message) for message in get_messages(response.wsgi_request)]


def post_json(client: Client, path: str, body: Any = None, **extra: Any) -> Any:
    return client.post(
        path,
        data=json.dumps({} if body is None else body),
        content_type="application/json",
        **extra,
    )


def iso(instant: datetime) -> str:
    """An instant as the API writes it."""
    return instant.isoformat().replace("+00:00", "Z")


def assert_refused(response: Any, status: int, error: str, primitive: str = "seo") -> dict:
    """A metered call refused with ``status`` and the contract's body for ``primitive``."""
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == error
    assert body["primitive"] == primitive
    assert isinstance(body["message"], str) and body["message"]
    return body


def ratelimit_field(value: str) -> dict[str, str]:
    """``"seo";r=2;t=30`` -> {"name": "seo", "r": "2", "t": "30"}."""
    name, *params = value.split(";")
    return {"name": name.strip('"'), **dict(p.split("=", 1) for p in params)}


def events_of(customer: Any, primitive: str = "seo") -> int:
    return UsageEvent.objects.filter(customer_id=customer.pk, primitive=primitive).count()


def counters_of(customer: Any) -> dict[tuple[str, datetime], int]:
    """Every counter row of ``customer``: (primitive, window start) -> used."""
    rows = UsageCounter.objects.filter(customer_id=customer.pk)
    return {(c.primitive, c.window_start): c.used for c in rows}


def window_now(customer: Any) -> Window:
    """The customer's current quota window, as enforcement computes it."""
    return entitlement_for(customer_id=customer.pk, fresh=True).window(timezone.now())


def used_now(customer: Any, primitive: str = "seo") -> int:
    """The customer's usage of ``primitive`` in its current window, as the API shows it."""
    return usage_rollup(customer_id=customer.pk).usage.get(primitive, 0)


def absent_customer_id() -> Any:
    """A well-formed key of the customer model (an int or a UUID) that names no customer."""
    return 10**12 if customer_key_is_integer() else uuid.uuid4()


def billed_user(customer: Any) -> Any:
    """Someone whose requests are billed to the customer: the customer itself when
    customers are users, else a user holding one of its seats, the first one's holder when
    it has some (the customer must have a subscription then)."""
    from billing_app.subscriptions.services import seats_manage

    if customer_is_user():
        return customer
    held = Seat.objects.filter(subscription__customer=customer).select_related("grantee").first()
    if held is not None:
        return held.grantee
    member = UserFactory()
    seats_manage(
        subscription_id=customer.billing_subscription.pk,
        operations=[{"type": "add", "grantee_id": member.pk}],
    )
    return member


def session_client(customer: Any, **defaults: Any) -> Client:
    """A client signed in as :func:`billed_user` of the customer."""
    client = Client(**defaults)
    client.force_login(billed_user(customer))
    return client


def in_parallel(calls: Callable[[int], Any], count: int, *, workers: int = 50) -> list[Any]:
    """``calls(i)`` for i in range(count), on ``workers`` threads (each with its own
    database connection) released together by a barrier, so the calls really overlap."""
    barrier = threading.Barrier(min(workers, count))

    def run(i: int) -> Any:
        if i < barrier.parties:
            barrier.wait()
        try:
            return calls(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, range(count)))


WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


def writes_of(queries: Any) -> list[str]:
    """The statements a ``CaptureQueriesContext`` saw that write: for "only reads"."""
    return [q["sql"] for q in queries.captured_queries if WRITES.match(q["sql"])]


class CacheDown(ConnectionError):
    pass


class FailingCache(BaseCache):
    """A Django cache backend that is down: every call raises, as a Redis that cannot be
    reached does. ``CACHES = {"broken": {"BACKEND": "tests.utils.FailingCache"}}``."""

    calls = 0

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)

    def _down(self, *args: Any, **kwargs: Any) -> Any:
        type(self).calls += 1
        raise CacheDown("the cache is down")

    add = get = set = touch = delete = has_key = incr = decr = clear = _down
    get_many = set_many = delete_many = get_or_set = _down


# --- the operator API's state, for "changes nothing" ----------------------------------


def error_fields(excinfo: pytest.ExceptionInfo[InvalidInput]) -> set[str]:
    """The arguments an ``InvalidInput`` names."""
    return set(excinfo.value.fields)


def assert_field_error(response: Any, field: str, status: int = 400) -> None:
    """The API refused with ``status`` and named ``field`` as the client sent it."""
    assert response.status_code == status, response.content
    assert field in response.json(), response.json()


def quotas_of(plan: Plan) -> dict[str, int]:
    return dict(PlanQuota.objects.filter(plan=plan).values_list("primitive", "limit"))


def plan_state() -> list[tuple]:
    """Everything a plan upsert may touch, to prove a refusal changed nothing."""
    plans = list(
        Plan.objects.order_by("key").values_list(
            "key",
            "name",
            "account_kit_id",
            "stripe_price_id",
            "period",
            "billing_cadence",
            "currency",
            "active",
            "stripe_meter_event",
            "updated_at",
        )
    )
    quotas = list(
        PlanQuota.objects.order_by("plan__key", "primitive").values_list(
            "plan__key", "primitive", "kind", "limit", "per_seat", "overage", "overage_unit_price"
        )
    )
    features = list(
        PlanFeature.objects.order_by("plan__key", "feature").values_list("plan__key", "feature")
    )
    return plans + quotas + features


def kit_state() -> list[tuple]:
    """Everything a kit upsert may touch."""
    kits = list(AccountKit.objects.order_by("key").values_list("key", "name", "updated_at"))
    primitives = list(
        AccountKit.objects.order_by("key", "primitives__primitive").values_list(
            "key", "primitives__primitive", "primitives__rate_per_minute"
        )
    )
    return kits + primitives


def json_id(pk: Any) -> int | str:
    """A key as the API answers it: an integer as a JSON number, any other (a UUID) as a
    string."""
    return pk if isinstance(pk, int) else str(pk)


def customers_count() -> int:
    return customer_model()._default_manager.count()


def holders(subscription_id: Any) -> set[Any]:
    """The ids of the users holding the subscription's seats."""
    seats = Seat.objects.filter(subscription_id=subscription_id)
    return set(seats.values_list("grantee_id", flat=True))


def subscription_state(customer: Any) -> tuple:
    """Everything subscription_set writes for a customer (its subscription, kit, billing
    periods and entitlement version), to prove a refusal wrote none of it."""
    subscription = Subscription.objects.filter(customer=customer).values().first()
    kit = KitAssignment.objects.filter(customer=customer).values_list("kit_id", flat=True).first()
    periods = list(BillingPeriod.objects.filter(customer=customer).order_by("start").values())
    return subscription, kit, periods, version_of(customer.pk)


def admin_form_data(response: Any, **changes: Any) -> dict[str, Any]:
    """What a browser posts back from an admin change page (``response``) when only
    ``changes`` (by field name, e.g. ``"quotas-1-limit"``) are edited: every field of the
    form and of its inlines with the value the page showed."""
    data: dict[str, Any] = {}

    def add(form: Any) -> None:
        for field in form:
            value = field.value()
            if value is None or value is False:
                continue
            data[field.html_name] = "on" if value is True else value

    add(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        add(inline.formset.management_form)
        for form in inline.formset.forms:
            add(form)
    return data | changes | {"_save": "Save"}
