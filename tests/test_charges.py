"""Charges under a plan's prices: a closed period's usage becomes invoice items on the
customer's Stripe subscription through the outbox, once, keyed by record, primitive and
line; in-advance prices charge when the period opens; late usage is charged at the prices
of the period it belongs to; the minimum commitment tops a period up; trials cost
nothing."""

from __future__ import annotations

import io
import logging
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing_app.catalog import services as catalog
from billing_app.cycles import services as closer
from billing_app.models import AdvanceCharge, BillingPeriod, OutboxMessage, Problem
from billing_app.outbox import services as outbox
from billing_app.periods import add_months
from billing_app.subscriptions import services as subscriptions

from .factories import CustomerFactory
from .utils import in_parallel, periods_of, use

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)
TIERS = [
    {"up_to": 1000, "unit_amount": "0.5"},
    {"up_to": 10000, "unit_amount": "0.4", "flat_amount": "100"},
    {"up_to": None, "unit_amount": "0.3"},
]


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def developer(db):
    return catalog.plan_upsert(
        key="developer",
        name="Developer",
        invoice_display_name="Developer plan",
        prices=[{"primitive": "llm.tokens", "model": "graduated", "tiers": TIERS}],
    )[0]


def subscribed(customer, now, *, plan_key="developer", days_ago=40, stripe="sub_dev", **fields):
    """On ``plan_key`` with a Stripe customer and subscription, in a month-long period that
    started ``days_ago``."""
    start = now - days_ago * DAY
    subscriptions.subscription_set(
        customer=customer,
        plan_key=plan_key,
        stripe_customer_id="cus_dev" if stripe else "",
        stripe_subscription_id=stripe,
        current_period_start=start,
        current_period_end=add_months(start, 1),
        at=now,
        **fields,
    )
    return start


def charges(prefix: str = "billing-") -> dict[str, OutboxMessage]:
    return {
        message.key: message
        for message in OutboxMessage.objects.filter(key__startswith=prefix).order_by("key")
    }


def amounts(messages: dict[str, OutboxMessage]) -> dict[str, Decimal]:
    """key -> quantity x unit amount, as Stripe totals the invoice item."""
    return {
        key: message.payload["quantity"] * Decimal(message.payload["unit_amount_decimal"])
        for key, message in messages.items()
    }


def test_a_closed_period_is_charged_line_by_line_on_the_subscription_once(developer, customer, now):
    start = subscribed(customer, now)
    use(customer, 1001, start + 3 * DAY, primitive="llm.tokens")

    (record,) = closer.records_close(at=now)
    closer.records_close(at=now)  # again: nothing more

    sent = charges()
    prefix = f"billing-charge-{record.pk}-llm.tokens"
    assert amounts(sent) == {
        f"{prefix}-tier-1": Decimal(500),
        f"{prefix}-tier-2": Decimal("0.4"),
        f"{prefix}-tier-2-flat": Decimal(100),
    }
    message = sent[f"{prefix}-tier-1"]
    assert message.kind == "stripe_invoice_item"
    end = add_months(start, 1)
    assert message.payload == {
        "customer": "cus_dev",
        "subscription": "sub_dev",
        "currency": "usd",
        "quantity": 1000,
        "unit_amount_decimal": "0.5",
        "description": (
            "Developer plan: llm.tokens, tier 1 (1 to 1000): 1000 units "
            f"({start:%Y-%m-%d} to {end:%Y-%m-%d})"
        ),
        "period": {"start": int(start.timestamp()), "end": int(end.timestamp())},
        "metadata": {"billing_period": str(record.pk), "primitive": "llm.tokens", "line": "tier-1"},
    }


def test_free_lines_and_unpriced_primitives_send_nothing(customer, now):
    catalog.plan_upsert(
        key="developer",
        name="Developer",
        prices=[
            {
                "primitive": "llm.tokens",
                "model": "graduated",
                "tiers": [{"up_to": 100, "unit_amount": "0"}, {"up_to": None, "unit_amount": "1"}],
            }
        ],
    )
    start = subscribed(customer, now)
    use(customer, 100, start + DAY, primitive="llm.tokens")  # all in the free tier
    use(customer, 5, start + DAY, primitive="seo")  # no price

    closer.records_close(at=now)

    assert charges() == {}


def test_the_minimum_commitment_tops_up_the_period(customer, now):
    catalog.plan_upsert(
        key="developer",
        name="Developer",
        minimum_commitment="2000",
        prices=[{"primitive": "llm.tokens", "unit_amount": "0.0002"}],
    )
    start = subscribed(customer, now)
    use(customer, 1_500_000, start + DAY, primitive="llm.tokens")

    (record,) = closer.records_close(at=now)

    assert amounts(charges()) == {
        f"billing-charge-{record.pk}-llm.tokens-units": Decimal(300),
        f"billing-charge-{record.pk}-plan-minimum": Decimal(1700),
    }
    top_up = charges()[f"billing-charge-{record.pk}-plan-minimum"].payload
    assert top_up["description"].startswith("Developer: minimum commitment top-up (")


def test_a_period_cut_short_by_a_plan_change_owes_its_share_of_the_minimum(customer, now):
    catalog.plan_upsert(key="developer", name="Developer", minimum_commitment="3000")
    catalog.plan_upsert(key="scale", name="Scale")
    start = now - 40 * DAY
    subscriptions.subscription_set(
        customer=customer,
        plan_key="developer",
        stripe_customer_id="cus_dev",
        billing_cycle_anchor=start,
        started_at=start,
        at=start,
    )
    cycle_end = add_months(start, 1)
    change = start + (cycle_end - start) / 3
    subscriptions.subscription_set(customer=customer, plan_key="scale", at=change)

    first, *_ = closer.records_close(at=now)

    assert (first.period.start, first.period.end) == (start, change)
    assert amounts(charges()) == {f"billing-charge-{first.pk}-plan-minimum": Decimal(1000)}


def test_without_a_stripe_customer_charges_are_logged_not_sent(developer, customer, now, caplog):
    start = subscribed(customer, now, stripe="")
    use(customer, 10, start + DAY, primitive="llm.tokens")
    with caplog.at_level(logging.WARNING):
        closer.records_close(at=now)
    assert charges() == {}
    assert "not billed: no Stripe customer" in caplog.text


def test_an_ended_subscriptions_last_period_is_charged_to_the_customer(developer, customer, now):
    start = subscribed(customer, now)
    use(customer, 10, start + DAY, primitive="llm.tokens")
    subscriptions.subscription_set(
        customer=customer, plan_key="developer", status="canceled", at=start + 2 * DAY
    )

    (record,) = closer.records_close(at=now)

    assert record.status == "final"
    (message,) = charges().values()
    assert message.payload["customer"] == "cus_dev"
    # Stripe puts it on the customer's next invoice: the subscription has ended.
    assert "subscription" not in message.payload


def test_late_usage_is_charged_at_the_prices_of_its_period(developer, customer, now):
    catalog.plan_upsert(
        key="scale",
        name="Scale",
        prices=[{"primitive": "llm.tokens", "unit_amount": "0.1"}],
    )
    start = now - 70 * DAY
    subscribed(customer, start + 40 * DAY, days_ago=40)
    use(customer, 1000, start + DAY, primitive="llm.tokens")
    first_end = add_months(start, 1)
    (first,) = closer.records_close(at=first_end + DAY)
    # The customer moved to Scale; usage of the first period is reported late.
    subscriptions.subscription_set(customer=customer, plan_key="scale", at=first_end + DAY)
    use(customer, 1, first_end - DAY, primitive="llm.tokens")
    use(customer, 10, first_end + 2 * DAY, primitive="llm.tokens")

    split, on_scale = closer.records_close(at=now)

    # The period closed next (Developer's, cut by the change) carries the late unit.
    assert split.plan.key == "developer" and on_scale.plan.key == "scale"
    late = split
    assert late.adjustments == [
        {"periodId": first.pk, "primitive": "llm.tokens", "used": 1, "overage": 0}
    ]
    sent = amounts(charges())
    # At Developer's graduated price: the 1,001st unit enters tier 2 (0.4 + 100 flat).
    assert sent[f"billing-charge-{late.pk}-llm.tokens-late-{first.pk}"] == Decimal("100.4")
    # Scale's own usage at Scale's price.
    assert sent[f"billing-charge-{on_scale.pk}-llm.tokens-units"] == Decimal(1)
    message = charges()[f"billing-charge-{late.pk}-llm.tokens-late-{first.pk}"]
    assert message.payload["description"].startswith(
        "Developer plan: llm.tokens, 1 units reported late for "
    )
    assert message.payload["period"]["start"] == int(start.timestamp())


def test_late_usage_taken_back_is_not_sent_as_a_credit(developer, customer, now):
    start = now - 70 * DAY
    subscribed(customer, start + 40 * DAY, days_ago=40)
    reservation = use(customer, 1001, start + DAY, primitive="llm.tokens")
    first_end = add_months(start, 1)
    closer.records_close(at=first_end + DAY)
    before = set(charges())
    from billing_app.metering import services as metering

    metering.usage_refund(reservation=reservation)  # the call failed after the close

    closer.records_close(at=now)

    assert set(charges()) == before


# --- in advance ---------------------------------------------------------------------------


@pytest.fixture
def prepaid(db):
    """Compute blocks bought ahead: 100 hours at 50 a period, each further hour 80."""
    return catalog.plan_upsert(
        key="reserved",
        name="Reserved",
        minimum_commitment="6000",
        prices=[
            {
                "primitive": "compute",
                "model": "graduated",
                "tiers": [
                    {"up_to": 100, "unit_amount": "50"},
                    {"up_to": None, "unit_amount": "80"},
                ],
                "included_quantity": 100,
                "payment_terms": "in_advance",
            }
        ],
    )[0]


def close_cycles() -> str:
    err = io.StringIO()
    call_command("billing_close_cycles", stdout=io.StringIO(), stderr=err)
    return err.getvalue()


def test_in_advance_prices_are_charged_when_the_period_opens(prepaid, customer, now):
    subscriptions.subscription_set(
        customer=customer, plan_key="reserved", stripe_customer_id="cus_dev", at=now - DAY
    )
    (period,) = periods_of(customer)

    assert "1 period(s) charged in advance." in close_cycles()
    close_cycles()  # again: nothing more

    (charge,) = AdvanceCharge.objects.all()
    assert (charge.period, charge.period_start, charge.plan) == (period, period.start, prepaid)
    assert amounts(charges()) == {
        f"billing-advance-{period.pk}-compute-advance-tier-1": Decimal(5000)
    }
    message = charges()[f"billing-advance-{period.pk}-compute-advance-tier-1"]
    assert message.payload["description"].startswith(
        "Reserved: compute, tier 1 (1 to 100): 100 units, in advance ("
    )
    assert "subscription" not in message.payload  # no Stripe subscription: the customer's


def test_at_the_close_usage_past_the_included_quantity_and_the_minimum_are_charged(
    prepaid, customer, now
):
    start = now - 40 * DAY
    subscriptions.subscription_set(
        customer=customer, plan_key="reserved", stripe_customer_id="cus_dev", at=start
    )
    (period,) = periods_of(customer)
    closer.advance_charges_add(at=start + DAY)
    use(customer, 110, start + 2 * DAY, primitive="compute")

    (record,) = closer.records_close(at=now)

    # 10 hours past the block, counted from the first tier: 10 x 50 = 500. Block 5000 +
    # 500 is short of the 6000 minimum by 500.
    assert amounts(charges(f"billing-charge-{record.pk}")) == {
        f"billing-charge-{record.pk}-compute-tier-1": Decimal(500),
        f"billing-charge-{record.pk}-plan-minimum": Decimal(500),
    }
    assert len(charges(f"billing-advance-{period.pk}")) == 1


def test_a_period_recorded_before_its_advance_charge_gets_it_with_the_record(
    prepaid, customer, now
):
    start = now - 40 * DAY
    subscriptions.subscription_set(
        customer=customer, plan_key="reserved", stripe_customer_id="cus_dev", at=start
    )
    (period,) = periods_of(customer)

    (record,) = closer.records_close(at=now)

    assert AdvanceCharge.objects.get().period == period
    assert amounts(charges()) == {
        f"billing-advance-{period.pk}-compute-advance-tier-1": Decimal(5000),
        f"billing-charge-{record.pk}-plan-minimum": Decimal(1000),
    }


def test_a_predicted_period_of_a_stripe_subscription_waits_for_stripes(prepaid, customer, now):
    start = now - 35 * DAY
    end = add_months(start, 1)
    subscriptions.subscription_set(
        customer=customer,
        plan_key="reserved",
        stripe_customer_id="cus_dev",
        stripe_subscription_id="sub_dev",
        current_period_start=start,
        current_period_end=end,
        source="stripe",
        at=start,
    )
    subscriptions.periods_advance(at=now)  # Stripe's renewal is late: predicted
    first, predicted = periods_of(customer)
    assert predicted.source == "cadence"

    charged = closer.advance_charges_add(at=now)

    assert [c.period for c in charged] == [first]
    # Stripe's renewal arrives: the period is Stripe's now, and charged.
    subscriptions.subscription_set(
        customer=customer,
        plan_key="reserved",
        current_period_start=end,
        current_period_end=add_months(end, 1),
        source="stripe",
        at=now,
    )
    assert BillingPeriod.objects.get(pk=predicted.pk).source == "stripe"
    assert [c.period_id for c in closer.advance_charges_add(at=now)] == [predicted.pk]
    assert charges(f"billing-advance-{predicted.pk}")[
        f"billing-advance-{predicted.pk}-compute-advance-tier-1"
    ].payload["subscription"] == ("sub_dev")


def test_a_failing_advance_charge_is_kept_as_a_problem_and_the_others_go_on(
    prepaid, now, monkeypatch
):
    first, second = CustomerFactory(), CustomerFactory()
    for customer in (first, second):
        subscriptions.subscription_set(
            customer=customer, plan_key="reserved", stripe_customer_id="cus_dev", at=now - DAY
        )
    broken = periods_of(first)[0].pk
    real = closer.advance_charge_add

    def failing(period, *, at):
        if period.pk == broken:
            raise RuntimeError("boom")
        return real(period, at=at)

    monkeypatch.setattr(closer, "advance_charge_add", failing)
    charged = closer.advance_charges_add(at=now)

    assert [c.customer_id for c in charged] == [second.pk]
    assert Problem.objects.get(subject=f"advance:{broken}").kind == "cycle_close"
    monkeypatch.setattr(closer, "advance_charge_add", real)
    closer.advance_charges_add(at=now)
    assert not Problem.objects.exists()
    assert AdvanceCharge.objects.count() == 2


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_schedulers_racing_charge_each_period_in_advance_once(prepaid, now):
    customers = [CustomerFactory() for _ in range(5)]
    for customer in customers:
        subscriptions.subscription_set(
            customer=customer, plan_key="reserved", stripe_customer_id="cus_dev", at=now - DAY
        )

    results = in_parallel(lambda i: closer.advance_charges_add(at=now), 8, workers=8)

    assert sum(len(charged) for charged in results) == 5
    assert AdvanceCharge.objects.count() == 5
    assert OutboxMessage.objects.filter(key__startswith="billing-advance-").count() == 5


# --- trials -------------------------------------------------------------------------------


def test_a_trial_period_is_not_charged(prepaid, customer, now):
    catalog.plan_upsert(key="reserved", name="Reserved", trial_days=14)
    start = now - 20 * DAY
    subscriptions.trial_start(customer=customer, plan_key="reserved", at=start)
    subscriptions.subscription_set(
        customer=customer, plan_key="reserved", stripe_customer_id="cus_dev"
    )
    use(customer, 500, start + DAY, primitive="compute")
    trial, after = periods_of(customer)

    closer.advance_charges_add(at=now)
    closed = closer.records_close(at=now)

    assert [r.period for r in closed] == [trial]
    assert AdvanceCharge.objects.get(period=trial).lines == []
    assert set(charges()) == {f"billing-advance-{after.pk}-compute-advance-tier-1"}


# --- delivery -------------------------------------------------------------------------------


def test_charges_reach_the_subscriptions_next_invoice_once(developer, customer, now, stripe_stub):
    stripe_customer = stripe_stub.customer(id="cus_dev")
    sub = stripe_stub.subscription(customer=stripe_customer["id"], price="price_dev")
    start = subscribed(customer, now, stripe=sub["id"])
    use(customer, 1001, start + DAY, primitive="llm.tokens")
    closer.records_close(at=now)

    assert outbox.deliver() == 3
    assert outbox.deliver() == 0

    items = [o for o in stripe_stub.objects.values() if o["object"] == "invoiceitem"]
    assert sorted(item["amount"] for item in items) == [0, 100, 500]  # 0.4 rounds to 0
    assert {item["parent"]["subscription_details"]["subscription"] for item in items} == {sub["id"]}
    sent = stripe_stub.calls("POST", "/v1/invoiceitems")
    assert sorted(call.headers["idempotency-key"] for call in sent) == sorted(charges())
