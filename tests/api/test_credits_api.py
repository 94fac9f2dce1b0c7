"""Credits over the API: the operator grants and reads, the customer reads and buys a pack
through Stripe Checkout; the pack's credits are given once, whatever the number and the
order of the webhooks that say the session is paid."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from billing_app.catalog.services import plan_upsert
from billing_app.metering.credits import balance_of, credit_pack_upsert, credits_grant
from billing_app.models import CreditEntry, CreditGrant
from billing_app.subscriptions.services import subscription_set

from ..utils import deliver

pytestmark = pytest.mark.django_db


@pytest.fixture
def developer(db):
    return plan_upsert(key="developer", name="Developer", credit_costs={"seo": 2})[0]


def test_a_plan_carries_its_credit_costs_and_credits(api):
    body = {
        "key": "dev",
        "name": "Dev",
        "creditCosts": {"seo": 2, "llm.tokens": 1},
        "credits": {"perPeriod": 1000, "rolloverCap": 200, "rolloverDays": 30},
    }
    created = api.post("/v1/plans", body, format="json")

    assert created.status_code == 201, created.content
    assert created.json()["creditCosts"] == {"llm.tokens": 1, "seo": 2}
    assert created.json()["credits"] == {"perPeriod": 1000, "rolloverCap": 200, "rolloverDays": 30}
    cleared = api.post("/v1/plans", {"key": "dev", "name": "Dev", "credits": None}, format="json")
    assert cleared.json()["credits"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"creditCosts": {"seo": 0}}, "creditCosts"),
        ({"creditCosts": {"Not A Slug": 1}}, "creditCosts"),
        ({"credits": {"perPeriod": -1}}, "credits"),
        ({"credits": {"rolloverDays": 0}}, "credits"),
    ],
)
def test_bad_credit_fields_of_a_plan_are_400_naming_them(api, body, field):
    response = api.post("/v1/plans", {"key": "dev", "name": "Dev", **body}, format="json")

    assert response.status_code == 400
    assert field in response.json()


def test_the_operator_grants_credits_with_a_reason_and_reads_the_ledger(api, developer, customer):
    subscription_set(customer=customer, plan_key="developer")
    url = f"/v1/users/{customer.pk}/billing/credits"

    granted = api.post(f"{url}/grants", {"amount": 50, "reason": "goodwill"}, format="json")
    refused = api.post(f"{url}/grants", {"amount": 50}, format="json")

    assert granted.status_code == 201, granted.content
    assert refused.status_code == 400 and "reason" in refused.json()
    assert api.get(url).json()["balance"] == 50
    entries = api.get(f"{url}/ledger").json()["entries"]
    assert [(e["kind"], e["delta"]) for e in entries] == [("grant", 50)]


def test_the_customer_reads_its_own_credits(customer_client, developer, customer):
    subscription_set(customer=customer, plan_key="developer")
    credits_grant(customer_id=customer.pk, amount=10, source="promotion")

    body = customer_client.get("/billing/credits").json()

    assert body["balance"] == 10
    assert [g["source"] for g in body["grants"]] == ["promotion"]


def test_reading_credits_writes_nothing_even_when_a_grant_has_expired(
    api, developer, customer, clock
):
    subscription_set(customer=customer, plan_key="developer")
    credits_grant(
        customer_id=customer.pk,
        amount=10,
        source="promotion",
        expires_at=clock.now + timedelta(days=1),
    )
    clock.set(clock.now + timedelta(days=2))

    with CaptureQueriesContext(connection) as queries:
        body = api.get(f"/v1/users/{customer.pk}/billing/credits").json()

    assert body["balance"] == 0  # as a draw now would find it
    written = [q["sql"] for q in queries if q["sql"].split()[0] in ("INSERT", "UPDATE", "DELETE")]
    assert written == []


def test_a_pack_bought_through_checkout_is_granted_once(
    client, api, developer, customer, customer_client, stripe_stub
):
    subscription_set(customer=customer, plan_key="developer")
    stripe_stub.price("price_pack", unit_amount=900, type="one_time", recurring=None)
    credit_pack_upsert(key="small", name="Small pack", credits=500, stripe_price_id="price_pack")
    started = customer_client.post(
        "/billing/credits/checkout",
        {
            "packKey": "small",
            "successUrl": "http://testserver/ok",
            "cancelUrl": "http://testserver/no",
        },
        format="json",
    )
    assert started.status_code == 200, started.content
    session_id = started.json()["url"].rsplit("/", 1)[1]
    sent = stripe_stub.calls("POST", "/v1/checkout/sessions")[0].params
    assert sent["mode"] == "payment" and sent["metadata"]["billing_credit_pack"] == "small"

    # Stripe says it is complete before it is paid (a delayed payment method), then twice
    # that it is paid: the credits come once, when it is paid.
    unpaid = stripe_stub.event("checkout.session.completed", stripe_stub.objects[session_id])
    assert deliver(client, unpaid).status_code == 200
    assert balance_of(customer_id=customer.pk) == 0
    session = stripe_stub.update(session_id, status="complete", payment_status="paid")
    paid = stripe_stub.event("checkout.session.async_payment_succeeded", session)
    for event in (paid, paid, unpaid):
        assert deliver(client, event).status_code == 200

    assert balance_of(customer_id=customer.pk) == 500
    assert CreditGrant.objects.filter(source="purchase").count() == 1
    assert CreditEntry.objects.filter(kind="grant").count() == 1


def test_checkout_of_an_unknown_pack_is_400(customer_client, stripe_stub):
    response = customer_client.post(
        "/billing/credits/checkout",
        {"packKey": "nope", "successUrl": "http://testserver/", "cancelUrl": "http://testserver/"},
        format="json",
    )
    assert response.status_code == 400 and "packKey" in response.json()


def test_credit_packs_are_upserted_by_key(api):
    body = {"key": "big", "name": "Big", "credits": 5000, "stripePriceId": "price_big"}
    assert api.post("/v1/credit-packs", body, format="json").status_code == 201
    body["credits"] = 6000
    updated = api.post("/v1/credit-packs", body, format="json")
    assert updated.status_code == 200 and updated.json()["credits"] == 6000
    assert [p["key"] for p in api.get("/v1/credit-packs").json()] == ["big"]


def test_an_unauthenticated_customer_gets_401(developer):
    assert APIClient().get("/billing/credits").status_code == 401
