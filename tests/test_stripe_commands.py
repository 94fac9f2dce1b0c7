"""``billing_sync_subscriptions``: recovery after missed webhooks, against the Stripe
stand-in. (The Stripe parts of the management commands' tests; test_commands.py holds the
others.)"""

from __future__ import annotations

import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from djstripe.models import Customer as StripeCustomer

from billing_app.models import Problem, Subscription

from .factories import AccountKitFactory, CustomerFactory, PlanFactory
from .utils import expected, item_set, refuse, state_of, stripe_customer_for, subscribe_on_stripe

pytestmark = pytest.mark.django_db


@pytest.fixture
def plans(db):
    basic = PlanFactory(
        key="basic", stripe_price_id="price_basic", account_kit=AccountKitFactory(key="kit_basic")
    )
    pro = PlanFactory(
        key="pro", stripe_price_id="price_pro", account_kit=AccountKitFactory(key="kit_pro")
    )
    free = PlanFactory(key="free", stripe_price_id="")  # the demo's plan without a price
    return basic, pro, free


def made_by_checkout(stripe_stub, customer):
    """A Stripe customer that dj-stripe has linked already, as Checkout leaves it: no
    webhook is needed for the sync to know whose it is."""
    stripe_customer = stripe_customer_for(stripe_stub, customer)
    StripeCustomer.sync_from_stripe_data(stripe_customer)
    return stripe_customer


def sync(*args):
    out, err = StringIO(), StringIO()
    call_command("billing_sync_subscriptions", *args, stdout=out, stderr=err)
    return out.getvalue().splitlines(), err.getvalue()


def test_prints_what_happened_to_each_subscription_read(stripe_stub, plans, customer):
    """An old ended subscription says it was not followed (not the customer's current
    one); one that cannot be applied says so; neither stops the others."""
    now = int(time.time())
    stripe_customer, new = subscribe_on_stripe(stripe_stub, customer, created=now - 600)
    old = stripe_stub.subscription(
        customer=stripe_customer["id"],
        price="price_basic",
        status="canceled",
        created=now - 7200,
        ended_at=now - 3600,
    )
    stranger = made_by_checkout(stripe_stub, CustomerFactory())
    broken = stripe_stub.subscription(customer=stranger["id"], price="price_pro", created=now)
    item_set(stripe_stub, broken["id"], price=None)

    lines, err = sync()

    assert lines == [
        f"{old['id']} (canceled): not followed: customer {customer.pk} follows {new['id']}",
        f"{new['id']} (active): customer {customer.pk} on pro (active)",
        f"{broken['id']} (active): not applied (see the billing problems)",
    ]
    assert err.strip() == "3 subscription(s) synced."
    assert state_of(customer) == expected(new)
    problem = Problem.objects.get()
    assert (problem.subject, problem.kind) == (f"stripe:{broken['id']}", "stripe_no_plan")


def test_after_missed_webhooks_the_customer_ends_on_the_newest(stripe_stub, plans, customer):
    """No webhook arrived at all: read oldest first, the customer ends on the one it has
    now, and the ended one keeps its own end."""
    now = int(time.time())
    stripe_customer = made_by_checkout(stripe_stub, customer)
    old = stripe_stub.subscription(
        customer=stripe_customer["id"],
        price="price_basic",
        status="canceled",
        created=now - 7200,
        start=now - 7200,
        ended_at=now - 3600,
    )
    new = stripe_stub.subscription(
        customer=stripe_customer["id"], price="price_pro", created=now - 600, start=now - 600
    )

    lines, _ = sync()

    assert [line.split(":")[0] for line in lines] == [
        f"{old['id']} (canceled)",
        f"{new['id']} (active)",
    ]
    assert lines[1].endswith(f"customer {customer.pk} on pro (active)")
    assert state_of(customer) == expected(new)


@pytest.mark.parametrize("option", ["--customer", "--user"])
def test_for_one_customer(stripe_stub, plans, customer, option):
    other = CustomerFactory()
    stripe_customer = made_by_checkout(stripe_stub, customer)
    mine = stripe_stub.subscription(customer=stripe_customer["id"], price="price_pro")
    theirs = stripe_stub.subscription(
        customer=made_by_checkout(stripe_stub, other)["id"], price="price_basic"
    )

    lines, _ = sync(option, str(customer.pk))

    assert lines == [f"{mine['id']} (active): customer {customer.pk} on pro (active)"]
    assert state_of(customer) == expected(mine)
    assert not Subscription.objects.filter(customer=other).exists()
    assert not stripe_stub.calls("GET", f"/v1/subscriptions/{theirs['id']}")


def test_for_one_customer_known_only_by_our_row(stripe_stub, plans, customer):
    """A Stripe customer dj-stripe never linked: found through the customer's own row."""
    stripe_customer, sub = subscribe_on_stripe(stripe_stub, customer)
    stripe_stub.update(sub["id"], cancel_at_period_end=True)  # a missed webhook

    sync("--customer", str(customer.pk))

    assert state_of(customer) == expected(sub)
    assert stripe_customer["id"] == state_of(customer)["customer"]


@pytest.mark.parametrize("value", ["999999", "not-an-id", "00000000-0000-0000-0000-000000000000"])
def test_unknown_customer_is_a_command_error(stripe_stub, plans, value):
    with pytest.raises(CommandError):
        sync("--customer", value)
    assert stripe_stub.requests == []


def test_stripe_unreachable_is_a_command_error_with_a_short_message(stripe_stub, plans):
    refuse(stripe_stub, "GET", "/v1/subscriptions", "req_123 internal at api-17.stripe.internal")

    with pytest.raises(CommandError) as error:
        sync()

    assert "req_123" not in str(error.value)
