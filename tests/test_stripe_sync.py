"""Stripe → customer: webhooks posted as Stripe posts them to ``/billing/webhook``, stored by
dj-stripe's real code against the Stripe stand-in, then applied by ``stripe.sync`` from
Stripe's current state, outside any transaction."""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import stripe
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from djstripe.models import Event, WebhookEventTrigger
from djstripe.models import Subscription as StripeSubscription

from billing_app.conf import customer_is_user
from billing_app.cycles.services import records_close
from billing_app.exceptions import QuotaExceeded
from billing_app.metering.selectors import usage_rollup
from billing_app.metering.services import usage_reserve
from billing_app.models import BillingPeriod, Problem, Subscription, UsageRecord
from billing_app.periods import add_months
from billing_app.subscriptions.services import periods_advance

from .factories import AccountKitFactory, CustomerFactory, PlanFactory
from .stripe_stub import WEBHOOK_SECRET, sign
from .utils import (
    at,
    deliver,
    expected,
    item_set,
    periods,
    renew,
    state_of,
    stripe_customer_for,
    ts,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def plans(db):
    """Two plans on two Stripe prices, each with its own kit."""
    basic = PlanFactory(
        key="basic", stripe_price_id="price_basic", account_kit=AccountKitFactory(key="kit_basic")
    )
    pro = PlanFactory(
        key="pro", stripe_price_id="price_pro", account_kit=AccountKitFactory(key="kit_pro")
    )
    return basic, pro


@pytest.fixture
def stripe_customer(stripe_stub, customer):
    """A Stripe customer that dj-stripe links to ``customer`` (its subscriber metadata)."""
    return stripe_customer_for(stripe_stub, customer)


def test_created_subscription_assigns_plan_kit_and_period(
    client, stripe_stub, plans, customer, stripe_customer
):
    sub = stripe_stub.subscription(customer=stripe_customer["id"], price="price_pro")

    response = deliver(client, stripe_stub.event("customer.subscription.created", sub))

    assert response.status_code == 200, response.content
    assert state_of(customer) == expected(sub)
    (period,) = BillingPeriod.objects.filter(customer=customer)
    assert period.source == BillingPeriod.Source.STRIPE
    assert StripeSubscription.objects.filter(id=sub["id"]).exists()  # dj-stripe's copy


def test_webhook_reads_stripe_not_the_stale_payload(
    client, stripe_stub, plans, customer, stripe_customer
):
    sub = stripe_stub.subscription(customer=stripe_customer["id"], price="price_basic")
    stale = stripe_stub.event("customer.subscription.created", sub)
    stripe_stub.set_price(sub["id"], "price_pro")  # upgraded before the event arrived

    deliver(client, stale)

    assert state_of(customer)["plan"] == "pro"


def test_item_quantity_is_the_seat_count(client, stripe_stub, plans, customer, stripe_customer):
    sub = stripe_stub.subscription(customer=stripe_customer["id"], price="price_pro")
    item_set(stripe_stub, sub["id"], quantity=7)

    deliver(client, stripe_stub.event("customer.subscription.created", sub))

    assert state_of(customer)["seats"] == 7


def test_duplicate_event_is_stored_once_and_changes_nothing(
    client, stripe_stub, plans, customer, stripe_customer
):
    sub = stripe_stub.subscription(customer=stripe_customer["id"], price="price_pro")
    event = stripe_stub.event("customer.subscription.created", sub)
    deliver(client, event)
    before = state_of(customer), periods(customer)

    assert deliver(client, event).status_code == 200

    assert Event.objects.filter(id=event["id"]).count() == 1
    assert (state_of(customer), periods(customer)) == before


# Every order of a subscription's life, with a duplicate, ends on Stripe's current state.


def lifecycle(stripe_stub, stripe_customer):
    """Stripe's four states of one subscription, and the event each change sent. The
    period started 20 days ago; the subscription ends a minute before now."""
    now = int(time.time())
    sub = stripe_stub.subscription(
        customer=stripe_customer["id"],
        price="price_basic",
        start=now - 20 * 86400,
        end=now + 10 * 86400,
    )
    states = [copy.deepcopy(sub)]
    stripe_stub.set_price(sub["id"], "price_pro")
    states.append(copy.deepcopy(sub))
    stripe_stub.update(sub["id"], cancel_at_period_end=True)
    states.append(copy.deepcopy(sub))
    stripe_stub.update(
        sub["id"],
        status="canceled",
        cancel_at_period_end=False,
        canceled_at=now - 60,
        ended_at=now - 60,
    )
    states.append(copy.deepcopy(sub))
    types = ["created", "updated", "updated", "deleted"]
    events = [
        stripe_stub.event(f"customer.subscription.{kind}", state)
        for kind, state in zip(types, states, strict=True)
    ]
    return sub["id"], states, events


def orders(n):
    """Every distinct order of n events plus one duplicate of any of them."""
    seen = set()
    for duplicate in range(n):
        for order in itertools.permutations([*range(n), duplicate]):
            if order not in seen:
                seen.add(order)
                yield order


def test_every_order_with_duplicates_ends_on_stripes_state(
    client, stripe_stub, plans, customer, stripe_customer
):
    """All 240 orders in one of the suite's four runs (they take minutes); every sixth in
    the others, which differ in the database and the customer model, not in the orders."""
    sub_id, states, events = lifecycle(stripe_stub, stripe_customer)
    every = 1 if connection.vendor == "postgresql" and customer_is_user() else 6
    tried = 0
    for order in itertools.islice(orders(len(events)), 0, None, every):
        with transaction.atomic():
            # Stripe sends an event only after its change: when event i arrives, Stripe
            # holds state i or a later one.
            reached = 0
            for index in order:
                reached = max(reached, index)
                stripe_stub.objects[sub_id] = copy.deepcopy(states[reached])
                assert deliver(client, events[index]).status_code == 200
                assert state_of(customer) == expected(states[reached]), order
            transaction.set_rollback(True)
        tried += 1
    assert tried == 240 // every  # 4 events, each duplicated once: 4 x 5!/2 orders


@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_end_on_stripes_last_state(stripe_stub, plans):
    """Stripe moves a subscription through its life while its events, each sent three
    times, arrive on parallel connections; a 500 is retried as Stripe retries. The apply
    runs outside transactions and confirms with a second read, so however the
    deliveries interleave, the customer ends on Stripe's last state."""
    for _ in range(3):
        customer = CustomerFactory()
        stripe_customer = stripe_customer_for(stripe_stub, customer)
        sub_id, states, events = lifecycle(stripe_stub, stripe_customer)
        changed = threading.Condition()
        reached = [-1]

        def stripe_moves(states=states, sub_id=sub_id, changed=changed, reached=reached):
            for index, state in enumerate(states):
                with changed:
                    stripe_stub.objects[sub_id] = copy.deepcopy(state)
                    reached[0] = index
                    changed.notify_all()
                time.sleep(0.05)

        def stripe_sends(index, events=events, changed=changed, reached=reached):
            with changed:  # Stripe sends an event only after its change
                changed.wait_for(lambda: reached[0] >= index)
            try:
                for _attempt in range(10):
                    if deliver(Client(), events[index]).status_code == 200:
                        return 200
                return 500
            finally:
                connection.close()

        with ThreadPoolExecutor(max_workers=13) as pool:
            mover = pool.submit(stripe_moves)
            answers = list(pool.map(stripe_sends, [i for i in range(4) for _ in range(3)]))
            mover.result()

        assert answers == [200] * 12
        assert state_of(customer) == expected(states[-1])
        assert Event.objects.filter(id__in=[event["id"] for event in events]).count() == 4


@pytest.mark.django_db(transaction=True)
def test_webhooks_arriving_together_are_each_taken_the_first_time(stripe_stub, plans):
    """Two workers take webhooks at once (the demo on SQLite served by two gunicorn
    workers): no delivery may fail for a locked database. SQLite is configured as the demo
    configures it: WAL, IMMEDIATE transactions, a busy timeout."""
    customers = [CustomerFactory() for _ in range(8)]
    events = []
    for customer in customers:
        stripe_customer = stripe_customer_for(stripe_stub, customer)
        sub = stripe_stub.subscription(customer=stripe_customer["id"], price="price_pro")
        events.append(stripe_stub.event("customer.subscription.created", sub))
    barrier = threading.Barrier(len(events))

    def send(event):
        barrier.wait()
        try:
            return deliver(Client(), event).status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(events)) as pool:
        answers = list(pool.map(send, events))

    assert answers == [200] * len(events)
    assert Subscription.objects.filter(plan__key="pro").count() == len(events)


# Finding the customer


def test_subscription_of_unknown_customer_is_recorded_not_retried(
    client, stripe_stub, plans, customer, caplog
):
    stranger = stripe_stub.customer()
    sub = stripe_stub.subscription(customer=stranger["id"], price="price_pro")

    response = deliver(client, stripe_stub.event("customer.subscription.created", sub))

    assert response.status_code == 200  # Stripe must not retry what only a fix can cure
    problem = Problem.objects.get(subject=f"stripe:{sub['id']}")
    assert problem.kind == Problem.Kind.STRIPE_NO_CUSTOMER
    assert stranger["id"] in problem.detail and "billing_customer" in problem.detail
    assert sub["id"] in caplog.text
    assert not Subscription.objects.exists()

    # The fix: link the Stripe customer to the customer, then re-sync.
    stripe_stub.update(stranger["id"], metadata={"billing_customer": str(customer.pk)})
    stripe_stub.update(sub["id"], metadata={"billing_customer": str(customer.pk)})
    call_command("billing_sync_subscriptions")

    assert state_of(customer) == expected(sub)
    assert not Problem.objects.exists()


def test_price_without_plan_is_recorded(client, stripe_stub, plans, customer, stripe_customer):
    sub = stripe_stub.subscription(customer=stripe_customer["id"], price="price_unknown")

    response = deliver(client, stripe_stub.event("customer.subscription.created", sub))

    assert response.status_code == 200
    problem = Problem.objects.get()
    assert problem.kind == Problem.Kind.STRIPE_NO_PLAN and "price_unknown" in problem.detail
    assert not Subscription.objects.exists()


@pytest.mark.parametrize("price", ["missing", "null"])
def test_item_without_price_never_matches_a_plan_without_price(
    client, stripe_stub, plans, customer, stripe_customer, price
):
    """The demo's ``free`` plan has no Stripe price: an item without one is not on it."""
    PlanFactory(key="free", stripe_price_id="")
    sub = stripe_stub.subscription(customer=stripe_customer["id"], price="price_pro")
    item = sub["items"]["data"][0]
    if price == "missing":
        del item["price"]
    else:
        item["price"] = None

    response = deliver(client, stripe_stub.event("customer.subscription.created", sub))

    assert response.status_code == 200, response.content
    problem = Problem.objects.get(subject=f"stripe:{sub['id']}")
    assert problem.kind == Problem.Kind.STRIPE_NO_PLAN
    assert "(no price)" in problem.detail
    assert not Subscription.objects.exists()


def test_customer_found_through_our_metadata_key(client, stripe_stub, plans, customer):
    stripe_customer = stripe_stub.customer()
    sub = stripe_stub.subscription(
        customer=stripe_customer["id"],
        price="price_pro",
        metadata={"billing_customer": str(customer.pk)},
    )

    deliver(client, stripe_stub.event("customer.subscription.created", sub))

    assert state_of(customer)["plan"] == "pro"


def test_metadata_naming_no_customer_is_a_problem(client, stripe_stub, plans):
    stripe_customer = stripe_stub.customer(metadata={"billing_customer": "not-a-customer"})
    sub = stripe_stub.subscription(customer=stripe_customer["id"], price="price_pro")

    response = deliver(client, stripe_stub.event("customer.subscription.created", sub))

    assert response.status_code == 200
    assert Problem.objects.get().kind == Problem.Kind.STRIPE_NO_CUSTOMER


def test_checkout_completed_links_customer_by_client_reference_id(client, stripe_stub, plans):
    customer = CustomerFactory()
    stripe_customer = stripe_stub.customer()  # made by Checkout: no link to anyone yet
    sub = stripe_stub.subscription(customer=stripe_customer["id"], price="price_pro")
    session = stripe_stub.make(
        "checkout.session",
        mode="subscription",
        status="complete",
        customer=stripe_customer["id"],
        subscription=sub["id"],
        client_reference_id=str(customer.pk),
    )

    # The subscription's own event may come first: nobody to apply it to yet.
    deliver(client, stripe_stub.event("customer.subscription.created", sub))
    assert Problem.objects.filter(kind=Problem.Kind.STRIPE_NO_CUSTOMER).exists()

    response = deliver(client, stripe_stub.event("checkout.session.completed", session))

    assert response.status_code == 200
    assert state_of(customer) == expected(sub)
    assert not Problem.objects.exists()
    # Later events of the subscription find the customer through our own row.
    stripe_stub.update(sub["id"], cancel_at_period_end=True)
    deliver(client, stripe_stub.event("customer.subscription.updated", sub))
    assert state_of(customer)["cancel_at_period_end"] is True


@pytest.mark.parametrize(
    ("event_type", "status"), [("invoice.payment_failed", "past_due"), ("invoice.paid", "active")]
)
def test_invoice_events_move_the_status(
    client, stripe_stub, plans, customer, stripe_customer, event_type, status
):
    sub = stripe_stub.subscription(customer=stripe_customer["id"], price="price_pro")
    deliver(client, stripe_stub.event("customer.subscription.created", sub))
    stripe_stub.update(sub["id"], status=status)
    invoice = stripe_stub.make(
        "invoice",
        customer=stripe_customer["id"],
        status="paid" if status == "active" else "open",
        parent={
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": sub["id"]},
        },
        lines={"object": "list", "data": [], "has_more": False, "url": "/v1/invoices/x/lines"},
    )

    assert deliver(client, stripe_stub.event(event_type, invoice)).status_code == 200

    assert state_of(customer)["status"] == status


def test_paused_and_resumed(client, stripe_stub, plans, customer, stripe_customer):
    sub = stripe_stub.subscription(customer=stripe_customer["id"], price="price_pro")
    stripe_stub.update(sub["id"], status="paused")
    deliver(client, stripe_stub.event("customer.subscription.paused", sub))
    assert state_of(customer)["status"] == "paused"

    stripe_stub.update(sub["id"], status="active")
    deliver(client, stripe_stub.event("customer.subscription.resumed", sub))
    assert state_of(customer)["status"] == "active"


def test_old_subscription_ending_does_not_end_the_new_one(
    client, stripe_stub, plans, customer, stripe_customer
):
    old = stripe_stub.subscription(customer=stripe_customer["id"], price="price_basic")
    new = stripe_stub.subscription(customer=stripe_customer["id"], price="price_pro")
    deliver(client, stripe_stub.event("customer.subscription.created", new))
    stripe_stub.update(old["id"], status="canceled", ended_at=int(time.time()))

    deliver(client, stripe_stub.event("customer.subscription.deleted", old))

    assert state_of(customer) == expected(new)


@pytest.mark.parametrize("first", ["older", "newer"])
def test_two_live_subscriptions_the_customer_follows_the_newer(
    client, stripe_stub, plans, customer, stripe_customer, first
):
    """Checkout refuses a second subscription, Stripe's dashboard does not. Of two live
    ones the customer follows the one created last, whatever order their events come in,
    and the other is a problem for the operator to cancel."""
    now = int(time.time())
    older = stripe_stub.subscription(
        customer=stripe_customer["id"], price="price_basic", created=now - 7200, start=now - 7200
    )
    newer = stripe_stub.subscription(
        customer=stripe_customer["id"], price="price_pro", created=now - 3600, start=now - 3600
    )
    deliveries = [older, newer] if first == "older" else [newer, older]

    for sub in deliveries:
        response = deliver(client, stripe_stub.event("customer.subscription.created", sub))
        assert response.status_code == 200

    assert state_of(customer) == expected(newer)
    problem = Problem.objects.get(kind=Problem.Kind.STRIPE_TWO_LIVE)
    assert problem.subject == f"stripe:{older['id']}"
    assert older["id"] in problem.detail and newer["id"] in problem.detail

    # Another event of the older one changes nothing either.
    stripe_stub.update(older["id"], cancel_at_period_end=True)
    deliver(client, stripe_stub.event("customer.subscription.updated", older))
    assert state_of(customer)["sub"] == newer["id"]


def test_failed_read_answers_500_and_stripes_retry_lands(
    client, stripe_stub, plans, customer, stripe_customer
):
    sub = stripe_stub.subscription(customer=stripe_customer["id"], price="price_pro")
    event = stripe_stub.event("customer.subscription.created", sub)
    reads = []

    def fail_our_reads(request):
        # dj-stripe's own fetch succeeds; our read of the subscription fails with an
        # answer that is not Stripe's shape.
        if request.method == "GET" and request.path == f"/v1/subscriptions/{sub['id']}":
            reads.append(request)
            if len(reads) >= 2:
                raise RuntimeError("upstream proxy: connection reset")

    stripe_stub.before = fail_our_reads
    assert deliver(client, event).status_code == 500  # Stripe will retry
    stripe_stub.before = None

    assert not Subscription.objects.exists()
    assert WebhookEventTrigger.objects.get().exception

    # Stripe retries the same event: dj-stripe has it already, and it is applied now.
    assert deliver(client, event).status_code == 200
    assert state_of(customer) == expected(sub)
    assert Event.objects.filter(id=event["id"]).count() == 1


def test_failed_confirm_read_answers_500_and_the_retry_lands(
    client, stripe_stub, plans, customer, stripe_customer
):
    """The state is applied, then the confirming read fails: Stripe must retry, since a
    newer state may have been missed."""
    sub = stripe_stub.subscription(customer=stripe_customer["id"], price="price_basic")
    event = stripe_stub.event("customer.subscription.created", sub)
    reads = []

    def fail_third_read(request):
        if request.method == "GET" and request.path == f"/v1/subscriptions/{sub['id']}":
            reads.append(request)
            if len(reads) == 3:
                stripe_stub.set_price(sub["id"], "price_pro")  # Stripe moved on meanwhile
                raise RuntimeError("<html>502 Bad Gateway</html>")

    stripe_stub.before = fail_third_read
    assert deliver(client, event).status_code == 500
    stripe_stub.before = None
    assert state_of(customer)["plan"] == "basic"

    assert deliver(client, event).status_code == 200
    assert state_of(customer) == expected(stripe_stub.objects[sub["id"]])


# The webhook's door


def signed(body, *, timestamp):
    return stripe.WebhookSignature.generate_signature_header(
        body, WEBHOOK_SECRET, timestamp=timestamp
    )


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "t=1,v1=deadbeef",
        "garbage",
        "SIGNED_WITH_OTHER_SECRET",
        "SIGNED_TOO_LONG_AGO",
        "SIGNED_TOO_FAR_AHEAD",
    ],
)
def test_bad_signature_is_400_and_stores_nothing(
    client, stripe_stub, plans, stripe_customer, signature
):
    sub = stripe_stub.subscription(customer=stripe_customer["id"], price="price_pro")
    event = stripe_stub.event("customer.subscription.created", sub)
    body = json.dumps(event)
    if signature == "SIGNED_WITH_OTHER_SECRET":
        signature = sign(body, "whsec_other")
    elif signature == "SIGNED_TOO_LONG_AGO":
        signature = signed(body, timestamp=int(time.time()) - 301)
    elif signature == "SIGNED_TOO_FAR_AHEAD":
        # A captured request replayed later must not be made valid by a future timestamp.
        signature = signed(body, timestamp=int(time.time()) + 400)
    requests = len(stripe_stub.requests)

    response = deliver(client, event, signature=signature)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_webhook"
    assert not WebhookEventTrigger.objects.exists()
    assert not Event.objects.exists()
    assert len(stripe_stub.requests) == requests


def test_signature_a_little_ahead_is_accepted(
    client, stripe_stub, plans, customer, stripe_customer
):
    """Clocks differ by seconds: Stripe's tolerance applies both ways, not less."""
    sub = stripe_stub.subscription(customer=stripe_customer["id"], price="price_pro")
    event = stripe_stub.event("customer.subscription.created", sub)
    body = json.dumps(event)

    response = deliver(client, event, signature=signed(body, timestamp=int(time.time()) + 60))

    assert response.status_code == 200
    assert state_of(customer)["plan"] == "pro"


def post_signed(client, body):
    return client.post(
        "/billing/webhook",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(body),
    )


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(["not", "an", "event"]),
        json.dumps({"id": "evt_1", "type": "customer.subscription.created"}),
        "{not json",
        "[" * 100_000 + "]" * 100_000,
        '{"id": "evt_1", "type": "x", "data": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ],
    ids=["list", "no-data", "not-json", "nested", "nested-data"],
)
def test_webhook_refuses_bodies_that_are_not_events(client, stripe_stub, body):
    response = post_signed(client, body)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_webhook"
    assert not WebhookEventTrigger.objects.exists()


@pytest.mark.parametrize("depth", [50, 500, 900, 5000])
def test_nested_event_data_is_never_a_500(
    client, stripe_stub, plans, customer, stripe_customer, depth
):
    """Nesting that the JSON parser accepts but deeper code might not (dj-stripe's copy,
    the database's JSON): an event is stored and applied, or refused; never a 500."""
    sub = stripe_stub.subscription(customer=stripe_customer["id"], price="price_pro")
    event = stripe_stub.event("customer.subscription.created", sub)
    body = json.dumps(event)
    nested = "[" * depth + "]" * depth
    body = body[:-1] + f', "nested": {nested}' + "}"
    body = body.replace('"data": {', f'"data": {{"previous_attributes": {{"x": {nested}}}, ', 1)

    response = post_signed(client, body)

    assert response.status_code in (200, 400), response.content
    if response.status_code == 200:
        assert state_of(customer)["plan"] == "pro"


def test_webhook_answers_post_only(client):
    assert client.get("/billing/webhook").status_code == 405


def test_webhook_without_secret_answers_503(client, stripe_stub, settings, monkeypatch):
    settings.STRIPE_WEBHOOK_SECRET = ""
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    answer = deliver(client, {"id": "evt_1", "type": "x", "data": {}})
    assert answer.status_code == 503
    assert answer.json()["message"] == "STRIPE_WEBHOOK_SECRET is not set."


def test_admin_retry_applies_a_fixed_problem(admin_client, client, stripe_stub, plans, customer):
    stranger = stripe_stub.customer()
    sub = stripe_stub.subscription(customer=stranger["id"], price="price_pro")
    deliver(client, stripe_stub.event("customer.subscription.created", sub))
    problem = Problem.objects.get()
    # The fix the detail names: our metadata key on the Stripe customer, whose update
    # Stripe announces (dj-stripe keeps its copy of the customer from that event).
    stripe_stub.update(stranger["id"], metadata={"billing_customer": str(customer.pk)})
    deliver(client, stripe_stub.event("customer.updated", stranger))

    response = admin_client.post(
        reverse("admin:billing_app_problem_changelist"),
        {"action": "retry", "_selected_action": [problem.pk]},
        follow=True,
    )

    assert "1 of 1 applied." in response.content.decode()
    assert state_of(customer) == expected(sub)
    assert not Problem.objects.exists()


# Periods and quota windows, as Stripe renews


@pytest.fixture
def metered(db):
    """A monthly Stripe price whose plan allows 5 seo calls per window (the test sets
    the window)."""

    def make(period="month"):
        return PlanFactory(
            key=f"metered-{period}",
            stripe_price_id="price_metered",
            period=period,
            billing_cadence="P1M",
            account_kit=AccountKitFactory(key="kit_metered", allow={"seo": None}),
            limits={"seo": 5},
        )

    return make


ANCHOR = at("2026-01-31 10:00")


def stripe_monthly(stripe_stub, stripe_customer, anchor=ANCHOR, **values):
    """A Stripe subscription anchored at ``anchor``, in its first period."""
    return stripe_stub.subscription(
        customer=stripe_customer["id"],
        price="price_metered",
        start=ts(anchor),
        end=ts(add_months(anchor, 1)),
        billing_cycle_anchor=ts(anchor),
        created=ts(anchor),
        **values,
    )


def call(customer):
    """One metered seo call now (the clock's now): True when admitted."""
    try:
        usage_reserve(customer_id=customer.pk, primitive="seo")
    except QuotaExceeded:
        return False
    return True


def renewal(client, stripe_stub, clock, sub, start, end):
    """Stripe renews at ``start``; its webhook arrives two minutes later."""
    clock.set(start + timedelta(minutes=2))
    renew(stripe_stub, sub["id"], start, end)
    response = deliver(client, stripe_stub.event("customer.subscription.updated", sub))
    assert response.status_code == 200, response.content


def test_month_end_anchor_admits_the_quota_once_per_stripe_period(
    client, customer_client, stripe_stub, clock, metered, customer, stripe_customer
):
    """Anchored Jan 31, Stripe's periods are Jan 31 -> Feb 28 -> Mar 31 -> Apr 30: each
    admits exactly 5 calls, spread over the whole period, however its renewal webhook
    lands. Windows counted from a moving period start, or clamped once, would admit 10
    inside one Stripe period."""
    metered("month")
    clock.set(ANCHOR)
    sub = stripe_monthly(stripe_stub, stripe_customer)
    assert (
        deliver(client, stripe_stub.event("customer.subscription.created", sub)).status_code == 200
    )
    bounds = [ANCHOR, *(add_months(ANCHOR, n) for n in (1, 2, 3))]
    assert bounds[1:] == [at("2026-02-28 10:00"), at("2026-03-31 10:00"), at("2026-04-30 10:00")]

    for start, end in itertools.pairwise(bounds):
        # Ten calls spread from the period's first instant to its last second.
        instants = [start + (end - start) * k / 10 for k in range(10)] + [
            end - timedelta(seconds=1)
        ]
        admitted = []
        for n, instant in enumerate(instants):
            if n == 1 and start != ANCHOR:
                renewal(client, stripe_stub, clock, sub, start, end)  # after the first call
            clock.set(instant)
            admitted.append(call(customer))
        assert admitted == [True] * 5 + [False] * 6, (start, admitted)

        # What is shown is what is enforced: the window is Stripe's period.
        usage = customer_client.get("/billing/usage").json()
        assert (usage["usage"]["seo"], usage["usage"]["seoLimit"]) == (5, 5)
        assert (usage["periodStart"], usage["periodEnd"]) == (
            start.isoformat().replace("+00:00", "Z"),
            end.isoformat().replace("+00:00", "Z"),
        )

    assert periods(customer) == [
        (start, end, "stripe", "metered-month") for start, end in itertools.pairwise(bounds)
    ]


def test_year_quota_on_a_monthly_price_is_one_window_per_year(
    client, stripe_stub, clock, metered, customer, stripe_customer
):
    metered("year")
    clock.set(ANCHOR)
    sub = stripe_monthly(stripe_stub, stripe_customer)
    deliver(client, stripe_stub.event("customer.subscription.created", sub))

    admitted = 0
    for month in range(12):
        start, end = add_months(ANCHOR, month), add_months(ANCHOR, month + 1)
        if month:
            renewal(client, stripe_stub, clock, sub, start, end)
        for instant in (start + timedelta(minutes=5), end - timedelta(minutes=1)):
            clock.set(instant)
            admitted += call(customer)
    assert admitted == 5  # not 12 x 5: renewals do not open windows
    rollup = usage_rollup(customer_id=customer.pk)
    assert (rollup.window.start, rollup.window.end) == (ANCHOR, at("2027-01-31 10:00"))
    assert len(periods(customer)) == 12

    # The anniversary opens the next year's window.
    renewal(client, stripe_stub, clock, sub, at("2027-01-31 10:00"), at("2027-02-28 10:00"))
    assert [call(customer) for _ in range(6)] == [True] * 5 + [False]


def test_week_quota_is_not_cut_short_by_a_renewal(
    client, stripe_stub, clock, metered, customer, stripe_customer
):
    """Weeks count from the anchor (Saturday Jan 31): the week of Mar 28 - Apr 4 holds
    Stripe's Mar 31 renewal, and stays one window."""
    metered("week")
    clock.set(ANCHOR)
    sub = stripe_monthly(stripe_stub, stripe_customer)
    deliver(client, stripe_stub.event("customer.subscription.created", sub))
    renewal(client, stripe_stub, clock, sub, at("2026-02-28 10:00"), at("2026-03-31 10:00"))

    clock.set("2026-03-29 12:00")
    assert [call(customer) for _ in range(5)] == [True] * 5
    renewal(client, stripe_stub, clock, sub, at("2026-03-31 10:00"), at("2026-04-30 10:00"))

    clock.set("2026-04-04 09:59")
    with pytest.raises(QuotaExceeded) as refused:
        usage_reserve(customer_id=customer.pk, primitive="seo")
    assert refused.value.resets_at == at("2026-04-04 10:00")
    clock.set("2026-04-04 10:00")
    assert call(customer) is True


def test_renewal_opens_the_next_period_and_the_ended_one_is_recorded(
    client, stripe_stub, clock, metered, customer, stripe_customer
):
    metered("month")
    clock.set(ANCHOR)
    sub = stripe_monthly(stripe_stub, stripe_customer)
    deliver(client, stripe_stub.event("customer.subscription.created", sub))
    clock.set("2026-02-10 00:00")
    assert call(customer)
    feb28, mar31 = at("2026-02-28 10:00"), at("2026-03-31 10:00")

    renewal(client, stripe_stub, clock, sub, feb28, mar31)
    records_close()

    old, new = BillingPeriod.objects.filter(customer=customer).order_by("start")
    assert (old.start, old.end, new.start, new.end) == (ANCHOR, feb28, feb28, mar31)
    record = UsageRecord.objects.get(period=old)
    assert record.usage["seo"]["used"] == 1
    assert not UsageRecord.objects.filter(period=new).exists()


def test_predicted_period_becomes_stripes_when_they_agree(
    client, stripe_stub, clock, metered, customer, stripe_customer
):
    metered("month")
    clock.set(ANCHOR)
    sub = stripe_monthly(stripe_stub, stripe_customer)
    deliver(client, stripe_stub.event("customer.subscription.created", sub))
    feb28, mar31 = at("2026-02-28 10:00"), at("2026-03-31 10:00")

    assert periods_advance(at=feb28 + timedelta(seconds=30)) == []  # before the webhook
    assert periods(customer)[-1] == (feb28, mar31, "cadence", "metered-month")
    renewal(client, stripe_stub, clock, sub, feb28, mar31)

    assert periods(customer) == [
        (ANCHOR, feb28, "stripe", "metered-month"),
        (feb28, mar31, "stripe", "metered-month"),
    ]


@pytest.mark.parametrize("scheduler_runs", [1, 2])
def test_predicted_periods_are_corrected_by_stripes(
    client, stripe_stub, clock, metered, customer, stripe_customer, scheduler_runs
):
    """On Feb 20 Stripe's cycle was reset (a trial granted until Apr 15: the period is now
    Feb 20 -> Apr 15). Its webhook is late: the scheduler predicted the plan's next
    monthly period(s) meanwhile. When Stripe's period arrives, no prediction is left:
    the periods tile time as Stripe says."""
    metered("month")
    clock.set(ANCHOR)
    sub = stripe_monthly(stripe_stub, stripe_customer)
    deliver(client, stripe_stub.event("customer.subscription.created", sub))
    feb20, apr15 = at("2026-02-20 10:00"), at("2026-04-15 10:00")
    stripe_stub.update(sub["id"], status="trialing", billing_cycle_anchor=ts(apr15))
    renew(stripe_stub, sub["id"], feb20, apr15)
    runs = [at("2026-02-28 10:01"), at("2026-03-31 10:01")][:scheduler_runs]
    for run in runs:
        clock.set(run)
        assert periods_advance() == []
    assert [p[2] for p in periods(customer)] == ["stripe"] + ["cadence"] * scheduler_runs

    clock.set(runs[-1] + timedelta(hours=1))
    response = deliver(client, stripe_stub.event("customer.subscription.updated", sub))

    assert response.status_code == 200
    assert periods(customer) == [
        (ANCHOR, feb20, "stripe", "metered-month"),
        (feb20, apr15, "stripe", "metered-month"),
    ]
    assert state_of(customer)["status"] == "trialing"
