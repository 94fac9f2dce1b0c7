"""Stripe → tenant: webhooks posted as Stripe posts them, processed by dj-stripe's real code
against the Stripe stand-in, applied by our receivers."""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import stripe
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from djstripe.models import Event, WebhookEventTrigger
from djstripe.models import Subscription as StripeSubscription

from billing_app.models import KitAssignment, StripeSyncProblem, Subscription

from .factories import AccountKitFactory, PlanFactory, UserFactory
from .stripe_stub import sign

pytestmark = pytest.mark.django_db


def deliver(client, event, *, signature=None):
    """POST ``event`` to the webhook endpoint: raw JSON, signed as Stripe signs it."""
    body = json.dumps(event)
    return client.post(
        "/billing/webhook",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(body) if signature is None else signature,
    )


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
def customer(stripe_stub, tenant):
    """A Stripe customer that dj-stripe links to ``tenant`` (its subscriber metadata)."""
    return stripe_stub.customer(metadata={"djstripe_subscriber": str(tenant.pk)})


def state_of(user):
    sub = Subscription.objects.select_related("plan").get(user=user)
    kit = KitAssignment.objects.select_related("kit").get(user=user).kit.key
    return {
        "plan": sub.plan.key,
        "status": sub.status,
        "sub": sub.stripe_subscription_id,
        "customer": sub.stripe_customer_id,
        "start": sub.current_period_start,
        "end": sub.current_period_end,
        "cancel_at_period_end": sub.cancel_at_period_end,
        "kit": kit,
    }


def expected(stripe_sub):
    """What the tenant must show for a Stripe subscription object."""
    item = stripe_sub["items"]["data"][0]
    plan = item["price"]["id"].removeprefix("price_")
    return {
        "plan": plan,
        "status": stripe_sub["status"],
        "sub": stripe_sub["id"],
        "customer": stripe_sub["customer"],
        "start": datetime.fromtimestamp(item["current_period_start"], tz=UTC),
        "end": datetime.fromtimestamp(item["current_period_end"], tz=UTC),
        "cancel_at_period_end": stripe_sub["cancel_at_period_end"],
        "kit": f"kit_{plan}",
    }


def test_created_subscription_assigns_plan_kit_and_period(
    client, stripe_stub, plans, tenant, customer
):
    sub = stripe_stub.subscription(customer=customer["id"], price="price_pro")

    response = deliver(client, stripe_stub.event("customer.subscription.created", sub))

    assert response.status_code == 200, response.content
    assert state_of(tenant) == expected(sub)
    assert StripeSubscription.objects.filter(id=sub["id"]).exists()  # dj-stripe's copy


def test_receiver_reads_stripe_not_the_stale_payload(client, stripe_stub, plans, tenant, customer):
    sub = stripe_stub.subscription(customer=customer["id"], price="price_basic")
    stale = stripe_stub.event("customer.subscription.created", sub)
    stripe_stub.set_price(sub["id"], "price_pro")  # upgraded before the event arrived

    deliver(client, stale)

    assert state_of(tenant)["plan"] == "pro"


def test_duplicate_event_is_processed_once(client, stripe_stub, plans, tenant, customer):
    sub = stripe_stub.subscription(customer=customer["id"], price="price_pro")
    event = stripe_stub.event("customer.subscription.created", sub)
    deliver(client, event)
    calls = len(stripe_stub.requests)

    assert deliver(client, event).status_code == 200

    assert len(stripe_stub.requests) == calls  # dj-stripe dropped it before any signal
    assert Event.objects.filter(id=event["id"]).count() == 1


# Every order of a subscription's life, with a duplicate, ends on Stripe's current state.


def lifecycle(stripe_stub, customer):
    """Stripe's four states of one subscription, and the event each change sent."""
    sub = stripe_stub.subscription(customer=customer["id"], price="price_basic")
    states = [copy.deepcopy(sub)]
    stripe_stub.set_price(sub["id"], "price_pro")
    states.append(copy.deepcopy(sub))
    stripe_stub.update(sub["id"], cancel_at_period_end=True)
    states.append(copy.deepcopy(sub))
    stripe_stub.update(sub["id"], status="canceled", cancel_at_period_end=False)
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
    client, stripe_stub, plans, tenant, customer
):
    sub_id, states, events = lifecycle(stripe_stub, customer)
    tried = 0
    for order in orders(len(events)):
        with transaction.atomic():
            # Stripe sends an event only after its change: when event i arrives, Stripe
            # holds state i or a later one.
            reached = 0
            for index in order:
                reached = max(reached, index)
                stripe_stub.objects[sub_id] = copy.deepcopy(states[reached])
                assert deliver(client, events[index]).status_code == 200
                assert state_of(tenant) == expected(states[reached]), order
            transaction.set_rollback(True)
        tried += 1
    assert tried == 240  # 4 events, each duplicated once: 4 x 5!/2 orders


def test_subscription_of_unknown_customer_is_recorded_not_retried(
    client, stripe_stub, plans, tenant, caplog
):
    stranger = stripe_stub.customer()
    sub = stripe_stub.subscription(customer=stranger["id"], price="price_pro")

    response = deliver(client, stripe_stub.event("customer.subscription.created", sub))

    assert response.status_code == 200  # Stripe must not retry what only a fix can cure
    problem = StripeSyncProblem.objects.get(stripe_subscription_id=sub["id"])
    assert problem.reason == "no_tenant"
    assert stranger["id"] in problem.detail and "billing_user" in problem.detail
    assert sub["id"] in caplog.text
    assert not Subscription.objects.exists()

    # The fix: link the customer to the tenant, then re-sync.
    stripe_stub.update(stranger["id"], metadata={"billing_user": str(tenant.pk)})
    stripe_stub.update(sub["id"], metadata={"billing_user": str(tenant.pk)})
    call_command("billing_sync_subscriptions")

    assert state_of(tenant) == expected(sub)
    assert not StripeSyncProblem.objects.exists()


def test_price_without_plan_is_recorded(client, stripe_stub, plans, tenant, customer):
    sub = stripe_stub.subscription(customer=customer["id"], price="price_unknown")

    assert (
        deliver(client, stripe_stub.event("customer.subscription.created", sub)).status_code == 200
    )

    problem = StripeSyncProblem.objects.get()
    assert problem.reason == "no_plan" and "price_unknown" in problem.detail
    assert not Subscription.objects.exists()


def test_tenant_found_through_our_metadata_key(client, stripe_stub, plans, tenant):
    customer = stripe_stub.customer()
    sub = stripe_stub.subscription(
        customer=customer["id"], price="price_pro", metadata={"billing_user": str(tenant.pk)}
    )

    deliver(client, stripe_stub.event("customer.subscription.created", sub))

    assert state_of(tenant)["plan"] == "pro"


def test_metadata_naming_no_user_is_a_problem(client, stripe_stub, plans):
    customer = stripe_stub.customer(metadata={"billing_user": "not-a-number"})
    sub = stripe_stub.subscription(customer=customer["id"], price="price_pro")

    assert (
        deliver(client, stripe_stub.event("customer.subscription.created", sub)).status_code == 200
    )

    assert StripeSyncProblem.objects.get().reason == "no_tenant"


def test_checkout_completed_links_tenant_by_client_reference_id(client, stripe_stub, plans):
    tenant = UserFactory()
    customer = stripe_stub.customer()  # made by Checkout: no link to anyone yet
    sub = stripe_stub.subscription(customer=customer["id"], price="price_pro")
    session = stripe_stub.make(
        "checkout.session",
        mode="subscription",
        status="complete",
        customer=customer["id"],
        subscription=sub["id"],
        client_reference_id=str(tenant.pk),
    )

    # The subscription's own event may come first: nobody to apply it to yet.
    deliver(client, stripe_stub.event("customer.subscription.created", sub))
    assert StripeSyncProblem.objects.filter(reason="no_tenant").exists()

    assert (
        deliver(client, stripe_stub.event("checkout.session.completed", session)).status_code == 200
    )

    assert state_of(tenant) == expected(sub)
    assert not StripeSyncProblem.objects.exists()
    # Later events of the subscription find the tenant through our own row.
    stripe_stub.update(sub["id"], cancel_at_period_end=True)
    deliver(client, stripe_stub.event("customer.subscription.updated", sub))
    assert state_of(tenant)["cancel_at_period_end"] is True


@pytest.mark.parametrize(
    ("event_type", "status"), [("invoice.payment_failed", "past_due"), ("invoice.paid", "active")]
)
def test_invoice_events_move_the_status(
    client, stripe_stub, plans, tenant, customer, event_type, status
):
    sub = stripe_stub.subscription(customer=customer["id"], price="price_pro", status="active")
    deliver(client, stripe_stub.event("customer.subscription.created", sub))
    stripe_stub.update(sub["id"], status=status)
    invoice = stripe_stub.make(
        "invoice",
        customer=customer["id"],
        status="paid" if status == "active" else "open",
        parent={
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": sub["id"]},
        },
        lines={"object": "list", "data": [], "has_more": False, "url": "/v1/invoices/x/lines"},
    )

    assert deliver(client, stripe_stub.event(event_type, invoice)).status_code == 200

    assert state_of(tenant)["status"] == status


def test_paused_and_resumed(client, stripe_stub, plans, tenant, customer):
    sub = stripe_stub.subscription(customer=customer["id"], price="price_pro")
    stripe_stub.update(sub["id"], status="paused")
    deliver(client, stripe_stub.event("customer.subscription.paused", sub))
    assert state_of(tenant)["status"] == "paused"

    stripe_stub.update(sub["id"], status="active")
    deliver(client, stripe_stub.event("customer.subscription.resumed", sub))
    assert state_of(tenant)["status"] == "active"


def test_old_subscription_ending_does_not_end_the_new_one(
    client, stripe_stub, plans, tenant, customer
):
    old = stripe_stub.subscription(customer=customer["id"], price="price_basic")
    new = stripe_stub.subscription(customer=customer["id"], price="price_pro")
    deliver(client, stripe_stub.event("customer.subscription.created", new))
    stripe_stub.update(old["id"], status="canceled")

    deliver(client, stripe_stub.event("customer.subscription.deleted", old))

    assert state_of(tenant) == expected(new)


def test_receiver_error_rolls_back_and_answers_500(client, stripe_stub, plans, tenant, customer):
    sub = stripe_stub.subscription(customer=customer["id"], price="price_pro")
    event = stripe_stub.event("customer.subscription.created", sub)
    fetches = []

    def fail_second_fetch(request):
        # dj-stripe's own fetch succeeds; our receiver's re-read under the lock fails.
        if request.method == "GET" and request.path == f"/v1/subscriptions/{sub['id']}":
            fetches.append(request)
            if len(fetches) >= 2:
                raise RuntimeError("Stripe is down")

    stripe_stub.before = fail_second_fetch
    assert deliver(client, event).status_code == 500  # Stripe will retry
    stripe_stub.before = None

    assert not Event.objects.filter(id=event["id"]).exists()
    assert not StripeSubscription.objects.filter(id=sub["id"]).exists()
    assert not Subscription.objects.exists()
    assert WebhookEventTrigger.objects.get().exception

    # Stripe retries the same event: now it lands.
    assert deliver(client, event).status_code == 200
    assert state_of(tenant) == expected(sub)


@pytest.mark.parametrize(
    "signature",
    ["", "t=1,v1=deadbeef", "garbage", "SIGNED_WITH_OTHER_SECRET", "SIGNED_TOO_LONG_AGO"],
)
def test_bad_signature_is_400_and_stores_nothing(client, stripe_stub, plans, customer, signature):
    sub = stripe_stub.subscription(customer=customer["id"], price="price_pro")
    event = stripe_stub.event("customer.subscription.created", sub)
    body = json.dumps(event)
    if signature == "SIGNED_WITH_OTHER_SECRET":
        signature = sign(body, "whsec_other")
    elif signature == "SIGNED_TOO_LONG_AGO":
        signature = stripe.WebhookSignature.generate_signature_header(
            body, "whsec_test_suite", timestamp=1_700_000_000
        )

    response = deliver(client, event, signature=signature)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_webhook"
    assert not WebhookEventTrigger.objects.exists()
    assert not Event.objects.exists()
    assert stripe_stub.requests == []


def test_webhook_refuses_bodies_that_are_not_events(client, stripe_stub):
    body = json.dumps(["not", "an", "event"])
    response = client.post(
        "/billing/webhook",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(body),
    )
    assert response.status_code == 400
    assert client.get("/billing/webhook").status_code == 405


def test_webhook_without_secret_answers_503(client, stripe_stub, settings, monkeypatch):
    settings.STRIPE_WEBHOOK_SECRET = ""
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    assert deliver(client, {"id": "evt_1", "type": "x", "data": {}}).status_code == 503


def test_sync_command_for_one_user(stripe_stub, plans, tenant, customer):
    other = UserFactory()
    other_customer = stripe_stub.customer(metadata={"djstripe_subscriber": str(other.pk)})
    mine = stripe_stub.subscription(customer=customer["id"], price="price_pro")
    stripe_stub.subscription(customer=other_customer["id"], price="price_basic")
    Subscription.objects.create(
        user=tenant,
        plan=plans[0],
        status="active",
        status_changed_at=datetime.now(UTC),
        stripe_customer_id=customer["id"],
        stripe_subscription_id=mine["id"],
    )

    call_command("billing_sync_subscriptions", user=str(tenant.pk))

    assert state_of(tenant) == expected(mine)
    assert not Subscription.objects.filter(user=other).exists()


def test_admin_retry_applies_a_fixed_problem(admin_client, client, stripe_stub, plans, tenant):
    stranger = stripe_stub.customer()
    sub = stripe_stub.subscription(customer=stranger["id"], price="price_pro")
    deliver(client, stripe_stub.event("customer.subscription.created", sub))
    problem = StripeSyncProblem.objects.get()
    stripe_stub.update(stranger["id"], metadata={"billing_user": str(tenant.pk)})

    response = admin_client.post(
        reverse("admin:billing_app_stripesyncproblem_changelist"),
        {"action": "retry", "_selected_action": [problem.pk]},
        follow=True,
    )

    assert "1 of 1 applied." in response.content.decode()
    assert state_of(tenant) == expected(sub)
    assert not StripeSyncProblem.objects.exists()


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_end_on_stripes_last_state(stripe_stub, plans):
    """Stripe moves a subscription through its life while its events, each sent three
    times, arrive on parallel connections; a 500 is retried as Stripe retries. However
    the deliveries interleave, the tenant ends on Stripe's last state."""
    for _ in range(3):
        tenant = UserFactory()
        customer = stripe_stub.customer(metadata={"djstripe_subscriber": str(tenant.pk)})
        sub_id, states, events = lifecycle(stripe_stub, customer)
        changed = threading.Condition()
        reached = [-1]

        def stripe_moves():
            for index, state in enumerate(states):
                with changed:
                    stripe_stub.objects[sub_id] = copy.deepcopy(state)
                    reached[0] = index
                    changed.notify_all()
                time.sleep(0.05)

        def stripe_sends(index):
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
        assert state_of(tenant) == expected(states[-1])
        assert Event.objects.filter(id__in=[event["id"] for event in events]).count() == 4


def test_renewal_webhook_closes_the_old_cycle(client, stripe_stub, plans, tenant, customer):
    from billing_app.models import UsageRecord

    first_end = int(time.time()) - 3600  # the first period ended an hour ago
    sub = stripe_stub.subscription(
        customer=customer["id"], price="price_pro", start=first_end - 30 * 86400, end=first_end
    )
    deliver(client, stripe_stub.event("customer.subscription.created", sub))
    # As if that event had come during the first period, which has ended since.
    UsageRecord.objects.filter(user=tenant).update(
        cycle_start=datetime.fromtimestamp(first_end - 30 * 86400, tz=UTC),
        cycle_end=datetime.fromtimestamp(first_end, tz=UTC),
    )
    item = sub["items"]["data"][0]
    item.update(current_period_start=first_end, current_period_end=first_end + 30 * 86400)

    deliver(client, stripe_stub.event("customer.subscription.updated", sub))

    old, new = UsageRecord.objects.filter(user=tenant).order_by("cycle_start")
    assert old.status == "recorded" and new.status == "current"
    assert old.cycle_end == new.cycle_start == datetime.fromtimestamp(first_end, tz=UTC)
