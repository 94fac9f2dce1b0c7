"""Auto top-ups: a metered call that leaves the balance below the customer's threshold
buys its pack, at most the monthly cap of times a calendar month, once however many calls
cross the threshold together. The credits are granted at once; the pack is charged to the
customer's Stripe customer through the outbox (an invoice item), never by a call to Stripe
inside a transaction."""

from datetime import UTC, datetime

import pytest

from billing_app.catalog.services import plan_upsert
from billing_app.client import billing
from billing_app.exceptions import InsufficientCredits, InvalidInput
from billing_app.metering.credits import (
    balance_of,
    credit_pack_upsert,
    credits_auto_top_up,
    credits_grant,
)
from billing_app.metering.services import usage_reserve
from billing_app.models import CreditAutoTopUp, CreditGrant, OutboxMessage
from billing_app.outbox import services as outbox
from billing_app.subscriptions.services import subscription_set

from .factories import CustomerFactory
from .utils import error_fields, in_parallel, synced_price

pytestmark = pytest.mark.django_db


@pytest.fixture
def pack(db, stripe_stub):
    """50 credits for 900 cents, its Stripe price synced."""
    stripe_stub.price("price_pack", unit_amount=900, type="one_time", recurring=None)
    synced_price(stripe_stub, "price_pack", "usd")
    return credit_pack_upsert(key="top", name="Top-up", credits=50, stripe_price_id="price_pack")[0]


def on_credits(customer, *, cost=10, balance=100, stripe_customer="cus_top"):
    plan_upsert(key="metered", name="Metered", credit_costs={"seo": cost})
    subscription_set(customer=customer, plan_key="metered", stripe_customer_id=stripe_customer)
    credits_grant(customer_id=customer.pk, amount=balance, source="manual", reason="start")


def call(customer, quantity=1):
    return usage_reserve(customer_id=customer.pk, primitive="seo", quantity=quantity)


def top_ups(customer):
    return list(
        CreditGrant.objects.filter(customer_id=customer.pk, source="purchase").order_by("pk")
    )


def charges():
    return {
        message.key: message.payload
        for message in OutboxMessage.objects.filter(key__startswith="billing-topup-")
    }


def test_falling_below_the_threshold_buys_the_pack_up_to_the_monthly_cap(
    pack, customer, stripe_stub
):
    on_credits(customer)
    billing.for_customer(customer).set_auto_top_up("top", below=30, monthly_cap=2)

    for _ in range(7):
        call(customer)  # 100 -> 30: not below
    assert top_ups(customer) == []
    call(customer)  # 20: below, the pack is bought
    assert balance_of(customer_id=customer.pk) == 70
    for _ in range(5):
        call(customer)  # 70 -> 20: the second top-up
    assert balance_of(customer_id=customer.pk) == 70
    for _ in range(5):
        call(customer)  # 20: the cap of 2 is reached, no third this month
    assert balance_of(customer_id=customer.pk) == 20
    call(customer)
    call(customer)
    with pytest.raises(InsufficientCredits):
        call(customer)

    month = datetime.now(UTC).strftime("%Y-%m")
    assert [(g.amount, g.source_ref) for g in top_ups(customer)] == [
        (50, f"topup:{customer.pk}:{month}:1"),
        (50, f"topup:{customer.pk}:{month}:2"),
    ]
    sent = charges()
    assert sorted(sent) == [
        f"billing-topup-{customer.pk}-{month}-1",
        f"billing-topup-{customer.pk}-{month}-2",
    ]
    payload = sent[f"billing-topup-{customer.pk}-{month}-1"]
    assert {k: payload[k] for k in ("customer", "amount", "currency")} == {
        "customer": "cus_top",
        "amount": 900,
        "currency": "usd",
    }
    # Delivered after, outside any transaction: two invoice items, each once.
    stripe_stub.customer(id="cus_top")
    assert outbox.deliver() == 2
    assert outbox.deliver() == 0
    items = stripe_stub.calls("POST", "/v1/invoiceitems")
    assert sorted(item.headers["idempotency-key"] for item in items) == sorted(sent)


def test_a_top_up_is_bought_once_whatever_calls_it(pack, customer):
    on_credits(customer, balance=25)
    billing.for_customer(customer).set_auto_top_up("top", below=30, monthly_cap=5)

    first = credits_auto_top_up(customer_id=customer.pk)
    again = credits_auto_top_up(customer_id=customer.pk)  # 75 now: not below

    assert first is not None and again is None
    assert len(top_ups(customer)) == len(charges()) == 1


def test_the_cap_counts_per_calendar_month(pack, customer, clock):
    on_credits(customer, balance=25)
    billing.for_customer(customer).set_auto_top_up("top", below=1000, monthly_cap=1)
    clock.set(datetime(2031, 1, 31, 23, 0, tzinfo=UTC))
    assert credits_auto_top_up(customer_id=customer.pk) is not None
    assert credits_auto_top_up(customer_id=customer.pk) is None  # the cap of January
    clock.set(datetime(2031, 2, 1, 0, 30, tzinfo=UTC))
    assert credits_auto_top_up(customer_id=customer.pk) is not None
    assert sorted(g.source_ref.rsplit(":", 2)[1] for g in top_ups(customer)) == [
        "2031-01",
        "2031-02",
    ]


def test_without_a_stripe_customer_nothing_is_bought(pack, customer):
    on_credits(customer, balance=25, stripe_customer="")
    billing.for_customer(customer).set_auto_top_up("top", below=30)
    call(customer)
    assert top_ups(customer) == [] and charges() == {}


def test_turned_off_nothing_is_bought(pack, customer):
    on_credits(customer, balance=35)
    billing.for_customer(customer).set_auto_top_up("top", below=30)
    billing.for_customer(customer).set_auto_top_up(None)
    call(customer)
    assert not CreditAutoTopUp.objects.exists()
    assert top_ups(customer) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"pack_key": "nope", "below": 5}, "pack_key"),
        ({"pack_key": "top", "below": 0}, "below"),
        ({"pack_key": "top", "below": True}, "below"),
        ({"pack_key": "top", "below": 5, "monthly_cap": 0}, "monthly_cap"),
        ({"pack_key": 7, "below": 5}, "pack_key"),
    ],
)
def test_a_bad_auto_top_up_names_its_field_and_changes_nothing(pack, customer, fields, field):
    from billing_app.metering.credits import credits_auto_top_up_set

    with pytest.raises(InvalidInput) as refused:
        credits_auto_top_up_set(customer_id=customer.pk, **fields)
    assert field in error_fields(refused)
    assert not CreditAutoTopUp.objects.exists()


def test_an_unpriced_pack_cannot_be_the_top_up(pack, customer):
    credit_pack_upsert(key="free", name="Free", credits=5)
    with pytest.raises(InvalidInput):
        billing.for_customer(customer).set_auto_top_up("free", below=5)


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_calls_crossing_the_threshold_together_buy_one_pack(stripe_stub):
    synced_price(stripe_stub, "price_pack", "usd")
    credit_pack_upsert(key="top", name="Top-up", credits=50, stripe_price_id="price_pack")
    for _ in range(3):
        customer = CustomerFactory()
        on_credits(customer, cost=1, balance=30)
        billing.for_customer(customer).set_auto_top_up("top", below=30, monthly_cap=5)

        in_parallel(lambda i, customer=customer: call(customer), 20)

        # Every call left the balance below 30; the first top-up lifted it past 30 for
        # every later one.
        assert len(top_ups(customer)) == 1
        assert balance_of(customer_id=customer.pk) == 30 - 20 + 50
        assert len([k for k in charges() if k.startswith(f"billing-topup-{customer.pk}-")]) == 1


# --- over the API ----------------------------------------------------------------------


def test_the_operator_sets_reads_and_turns_off_the_auto_top_up(api, pack, customer):
    path = f"/v1/users/{customer.pk}/billing/credits/auto-top-up"
    off = {"packKey": None, "below": None, "monthlyCap": None}
    assert api.get(path).json() == off

    answer = api.put(path, {"packKey": "top", "below": 500, "monthlyCap": 4}, format="json")

    assert answer.status_code == 200, answer.content
    assert answer.json() == {"packKey": "top", "below": 500, "monthlyCap": 4}
    assert api.get(path).json() == answer.json()
    config = CreditAutoTopUp.objects.get(customer_id=customer.pk)
    assert (config.pack, config.below, config.monthly_cap) == (pack, 500, 4)
    assert api.put(path, {"packKey": None}, format="json").json() == off
    assert not CreditAutoTopUp.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"packKey": "nope", "below": 5}, "packKey"),
        ({"packKey": "top"}, "below"),
        ({"packKey": "top", "below": 0}, "below"),
        ({"packKey": "top", "below": "many"}, "below"),
        ({"packKey": "top", "below": 5, "monthlyCap": 0}, "monthlyCap"),
        ({"below": 5}, "packKey"),
    ],
)
def test_a_bad_auto_top_up_is_400_naming_its_field(api, pack, customer, body, field):
    path = f"/v1/users/{customer.pk}/billing/credits/auto-top-up"
    response = api.put(path, body, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not CreditAutoTopUp.objects.exists()


def test_the_auto_top_up_of_an_unknown_customer_is_404(api, pack):
    path = "/v1/users/999999999/billing/credits/auto-top-up"
    assert api.put(path, {"packKey": "top", "below": 5}, format="json").status_code == 404
