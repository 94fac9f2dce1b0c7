"""The upcoming charges: the open period's charges so far and projected to its end, for the
operator (``/v1/users/<id>/billing/upcoming``) and the customer (``/billing/upcoming``),
read only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing_app.catalog import services as catalog
from billing_app.cycles import services as closer
from billing_app.subscriptions import services as subscriptions

from ..utils import iso, periods_of, use

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture
def developer(db):
    catalog.product_upsert(key="llm", name="LLM platform")
    return catalog.plan_upsert(
        key="developer",
        name="Developer",
        product_id="llm",
        invoice_display_name="Developer (monthly)",
        minimum_commitment="2000",
        prices=[
            # $0.002 per 1K input tokens: 0.0002 cents a token.
            {"primitive": "llm.input-tokens", "unit_amount": "0.0002"},
            # $0.006 per started 1K output tokens.
            {
                "primitive": "llm.output-tokens",
                "model": "package",
                "unit_amount": "0.6",
                "package_size": 1000,
            },
            # A support hour bought ahead each month, $1.
            {
                "primitive": "support",
                "unit_amount": "100",
                "included_quantity": 1,
                "payment_terms": "in_advance",
            },
        ],
    )[0]


@pytest.fixture
def ten_days_in(developer, customer, clock):
    """A 30-day period, 10 days in, with 1,000,000 input and 250,500 output tokens used."""
    start = (timezone.now() - 12 * DAY).replace(hour=0, minute=0, second=0, microsecond=0)
    subscriptions.subscription_set(
        customer=customer,
        plan_key="developer",
        current_period_start=start,
        current_period_end=start + 30 * DAY,
        at=start,
    )
    use(customer, 1_000_000, start + DAY, primitive="llm.input-tokens")
    use(customer, 250_500, start + 2 * DAY, primitive="llm.output-tokens")
    clock.set(start + 10 * DAY)
    return start


def line(primitive, name, description, quantity, unit, amount):
    return {
        "primitive": primitive,
        "line": name,
        "description": description,
        "quantity": quantity,
        "unitAmount": unit,
        "amount": amount,
    }


SUPPORT = line("support", "advance-units", "1 units, in advance", 1, "100", "100")


def test_the_charges_so_far_and_projected(api, customer, ten_days_in):
    start = ten_days_in
    response = api.get(f"/v1/users/{customer.pk}/billing/upcoming")

    assert response.status_code == 200, response.content
    assert response.json() == {
        "plan": "developer",
        "invoiceDisplayName": "Developer (monthly)",
        "currency": "usd",
        "periodStart": iso(start),
        "periodEnd": iso(start + 30 * DAY),
        "asOf": iso(start + 10 * DAY),
        "minimumCommitment": "2000",
        "charges": {
            "lines": [
                SUPPORT,
                line("llm.input-tokens", "units", "1000000 units", 1_000_000, "0.0002", "200"),
                line(
                    "llm.output-tokens",
                    "packages",
                    "250500 units: 251 x 1000-unit packages",
                    251,
                    "0.6",
                    "150.6",
                ),
            ],
            "total": "450.6",
        },
        # Ten days of thirty: usage x 3.
        "projection": {
            "lines": [
                SUPPORT,
                line("llm.input-tokens", "units", "3000000 units", 3_000_000, "0.0002", "600"),
                line(
                    "llm.output-tokens",
                    "packages",
                    "751500 units: 752 x 1000-unit packages",
                    752,
                    "0.6",
                    "451.2",
                ),
                line(None, "minimum", "minimum commitment top-up", 1, "848.8", "848.8"),
            ],
            "total": "2000",
        },
    }


def test_the_customer_sees_the_same(api, customer, customer_client, ten_days_in):
    mine = customer_client.get("/billing/upcoming")
    assert mine.status_code == 200
    assert mine.json() == api.get(f"/v1/users/{customer.pk}/billing/upcoming").json()


def test_reading_the_upcoming_charges_writes_nothing(api, customer, ten_days_in):
    with CaptureQueriesContext(connection) as queries:
        assert api.get(f"/v1/users/{customer.pk}/billing/upcoming").status_code == 200
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]
    assert writes == []


def test_an_advance_charge_already_made_is_shown_as_made(api, customer, ten_days_in):
    closer.advance_charges_add()
    # The price goes up afterwards: the period was charged at the old one.
    catalog.plan_upsert(
        key="developer",
        name="Developer",
        prices=[
            {
                "primitive": "support",
                "unit_amount": "250",
                "included_quantity": 1,
                "payment_terms": "in_advance",
            }
        ],
    )
    body = api.get(f"/v1/users/{customer.pk}/billing/upcoming").json()
    assert body["charges"]["lines"] == [SUPPORT]


def test_late_usage_of_the_previous_period_is_in_both(api, customer, developer, clock):
    start = (timezone.now() - 40 * DAY).replace(hour=0, minute=0, second=0, microsecond=0)
    subscriptions.subscription_set(
        customer=customer,
        plan_key="developer",
        current_period_start=start,
        current_period_end=start + 30 * DAY,
        at=start,
    )
    closer.records_close(at=start + 31 * DAY)
    clock.set(start + 35 * DAY)
    subscriptions.periods_advance()
    use(customer, 5_000, start + 29 * DAY, primitive="llm.input-tokens")  # reported late

    body = api.get(f"/v1/users/{customer.pk}/billing/upcoming").json()

    first = periods_of(customer)[0]
    late = line(
        "llm.input-tokens",
        f"late-{first.pk}",
        f"5000 units reported late for {start:%Y-%m-%d} to {start + 30 * DAY:%Y-%m-%d}",
        1,
        "1",
        "1",
    )
    assert body["charges"]["lines"] == [SUPPORT, late]
    assert body["projection"]["lines"][-1] == late


def test_a_trial_costs_nothing(api, customer, developer):
    catalog.plan_upsert(key="developer", name="Developer", trial_days=14)
    subscriptions.trial_start(customer=customer, plan_key="developer")
    use(customer, 1_000_000, timezone.now(), primitive="llm.input-tokens")

    body = api.get(f"/v1/users/{customer.pk}/billing/upcoming").json()

    assert body["charges"] == {"lines": [], "total": "0"}
    assert body["projection"] == {"lines": [], "total": "0"}
    assert body["minimumCommitment"] is None


def test_404_without_an_open_period(api, customer, customer_client, developer):
    assert api.get(f"/v1/users/{customer.pk}/billing/upcoming").status_code == 404
    assert customer_client.get("/billing/upcoming").status_code == 404


def test_the_largest_amounts_a_plan_can_make_are_exact(api, customer, clock):
    """2^63 - 1 units bought in advance at 10^12 - 1 cents each: 31 significant digits,
    past Python's default of 28, which rounded them and could not print them (a 500)."""
    most = 2**63 - 1
    catalog.plan_upsert(
        key="huge",
        name="Huge",
        prices=[
            {
                "primitive": "seo",
                "unit_amount": "999999999999",
                "included_quantity": most,
                "payment_terms": "in_advance",
            }
        ],
    )
    subscriptions.subscription_set(customer=customer, plan_key="huge")

    answer = api.get(f"/v1/users/{customer.pk}/billing/upcoming")

    assert answer.status_code == 200
    (advance,) = answer.json()["charges"]["lines"]
    assert advance["quantity"] == most
    assert advance["amount"] == str(most * 999_999_999_999)
