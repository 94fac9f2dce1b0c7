"""Tenant self-service: /billing/subscription, usage, invoices, checkout, portal, cancel."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from djstripe.models import Customer, Invoice
from rest_framework.test import APIClient

from billing_app import enforcement, services
from billing_app.models import Subscription

from ..factories import AccountKitFactory, PlanFactory, UserFactory

pytestmark = pytest.mark.django_db


def as_tenant(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {services.tenant_token_issue(user=user)[1]}")
    return client


@pytest.fixture
def me(tenant_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_token}")
    return client


@pytest.fixture
def pro(db):
    kit = AccountKitFactory(key="kit_pro", allow={"seo": None, "llm.tokens": None, "aeo": None})
    return PlanFactory(
        key="pro",
        stripe_price_id="price_pro",
        account_kit=kit,
        limits={"seo": 1000, "llm.tokens": 50_000},
    )


def subscribe_on_stripe(stripe_stub, user, price="price_pro", **values):
    """A Stripe customer and subscription of ``user``, applied as a webhook would."""
    from billing_app import stripe_sync

    customer = stripe_stub.customer(metadata={"djstripe_subscriber": str(user.pk)})
    sub = stripe_stub.subscription(customer=customer["id"], price=price, **values)
    stripe_sync.subscription_sync(sub["id"], refresh=True)
    return customer, sub


# --- who may ask ---------------------------------------------------------------------


ENDPOINTS = [
    ("get", "/billing/subscription"),
    ("get", "/billing/usage"),
    ("get", "/billing/invoices"),
    ("post", "/billing/checkout"),
    ("post", "/billing/portal"),
    ("post", "/billing/cancel"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_anonymous_is_401(anonymous, method, path):
    response = getattr(anonymous, method)(path, {}, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_operator_key_must_name_the_tenant(api, method, path):
    assert getattr(api, method)(path, {}, format="json").status_code == 401


def test_operator_key_acting_for_a_tenant(api, pro, tenant):
    services.subscription_set(user=tenant, plan_key="pro")
    response = api.get("/billing/subscription", HTTP_X_BILLING_USER=str(tenant.pk))
    assert response.status_code == 200
    assert response.json()["plan"] == "pro"


def test_tenant_token_cannot_act_for_another(me, pro):
    other = UserFactory()
    services.subscription_set(user=other, plan_key="pro")
    response = me.get("/billing/subscription", HTTP_X_BILLING_USER=str(other.pk))
    assert response.status_code == 403


def test_session_user_is_the_tenant(client, pro, tenant):
    services.subscription_set(user=tenant, plan_key="pro")
    client.force_login(tenant)
    assert client.get("/billing/subscription").json()["plan"] == "pro"


# --- subscription --------------------------------------------------------------------


def test_subscription_404_when_none(me):
    response = me.get("/billing/subscription")
    assert response.status_code == 404


def test_subscription_shape(me, pro, tenant, stripe_stub):
    _, sub = subscribe_on_stripe(stripe_stub, tenant, cancel_at_period_end=True)
    item = sub["items"]["data"][0]

    body = me.get("/billing/subscription").json()

    assert body == {
        "id": sub["id"],
        "plan": "pro",
        "status": "active",
        "currentPeriodStart": datetime.fromtimestamp(item["current_period_start"], UTC)
        .isoformat()
        .replace("+00:00", "Z"),
        "currentPeriodEnd": datetime.fromtimestamp(item["current_period_end"], UTC)
        .isoformat()
        .replace("+00:00", "Z"),
        "cancelAtPeriodEnd": True,
    }


def test_subscription_without_stripe_has_null_id(me, pro, tenant):
    services.subscription_set(user=tenant, plan_key="pro")
    assert me.get("/billing/subscription").json()["id"] is None


# --- usage ---------------------------------------------------------------------------


def test_usage_names_each_primitive_and_its_limit(me, pro, tenant):
    services.subscription_set(user=tenant, plan_key="pro")
    enforcement.record(user=tenant, primitive="seo", quantity=15)
    enforcement.record(user=tenant, primitive="llm.tokens", quantity=1200)

    body = me.get("/billing/usage").json()

    assert body["period"] == datetime.now(UTC).strftime("%Y-%m")
    assert body["usage"] == {
        "aeo": 0,
        "aeoLimit": None,  # in the kit, no quota: unlimited
        "llmTokens": 1200,
        "llmTokensLimit": 50_000,
        "seo": 15,
        "seoLimit": 1000,
    }


def test_usage_is_the_tenants_own(me, pro, tenant):
    other = UserFactory()
    services.subscription_set(user=other, plan_key="pro")
    enforcement.record(user=other, primitive="seo", quantity=7)

    assert me.get("/billing/usage").json()["usage"] == {}


# --- invoices ------------------------------------------------------------------------


def make_invoice(stripe_stub, customer, *, created, status="paid", total=4900):
    invoice = stripe_stub.make(
        "invoice",
        customer=customer["id"],
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


def test_invoices_newest_first_and_only_mine(me, pro, tenant, stripe_stub):
    customer, _ = subscribe_on_stripe(stripe_stub, tenant)
    older = make_invoice(stripe_stub, customer, created=1_767_225_600)
    newer = make_invoice(stripe_stub, customer, created=1_769_904_000, status="open")
    stranger = stripe_stub.customer(metadata={"djstripe_subscriber": str(UserFactory().pk)})
    Customer.sync_from_stripe_data(stranger)
    make_invoice(stripe_stub, stranger, created=1_769_904_100)

    body = me.get("/billing/invoices").json()

    assert [i["id"] for i in body["invoices"]] == [newer.id, older.id]
    assert body["invoices"][1] == {
        "id": older.id,
        "amount": 4900,
        "currency": "usd",
        "status": "paid",
        "paidAt": "2026-01-01T00:01:00Z",
        "pdfUrl": "https://pay.stripe.com/invoice/1767225600/pdf",
    }
    assert body["invoices"][0]["paidAt"] is None
    assert body["next"] is None


def test_invoices_are_paginated(me, pro, tenant, stripe_stub):
    customer, _ = subscribe_on_stripe(stripe_stub, tenant)
    ids = [make_invoice(stripe_stub, customer, created=1_767_225_600 + n).id for n in range(5)]

    first = me.get("/billing/invoices", {"pageSize": 2}).json()
    second = me.get(first["next"]).json()
    third = me.get(second["next"]).json()

    seen = [i["id"] for page in (first, second, third) for i in page["invoices"]]
    assert seen == ids[::-1]
    assert third["next"] is None


def test_invoices_empty_without_customer(me):
    assert me.get("/billing/invoices").json() == {"invoices": [], "next": None, "previous": None}


# --- checkout ------------------------------------------------------------------------


CHECKOUT = {
    "priceId": "price_pro",
    "successUrl": "https://testserver/billing/done",
    "cancelUrl": "http://localhost:8000/pricing",
}


def test_checkout_creates_a_subscription_session(me, pro, tenant, stripe_stub):
    stripe_stub.price("price_pro")  # Checkout sells only a price Stripe has
    response = me.post("/billing/checkout", CHECKOUT, format="json")

    assert response.status_code == 200, response.content
    (created,) = stripe_stub.calls("POST", "/v1/checkout/sessions")
    sent = created.params
    customer = Customer.objects.get(subscriber=tenant)
    assert sent["mode"] == "subscription"
    assert sent["line_items"] == [{"price": "price_pro", "quantity": "1"}]
    assert sent["customer"] == customer.id
    assert sent["success_url"] == CHECKOUT["successUrl"]
    assert sent["cancel_url"] == CHECKOUT["cancelUrl"]
    assert sent["client_reference_id"] == str(tenant.pk)
    assert sent["subscription_data"]["metadata"] == {"billing_user": str(tenant.pk)}
    assert response.json() == {"url": stripe_stub.objects[_session_id(response)]["url"]}
    # The customer was created with the tenant link in its metadata.
    (made,) = stripe_stub.calls("POST", "/v1/customers")
    assert made.params["metadata"] == {
        "billing_user": str(tenant.pk),
        "djstripe_subscriber": str(tenant.pk),
    }


def _session_id(response):
    return response.json()["url"].rsplit("/", 1)[1]


def test_checkout_reuses_the_tenants_customer(me, pro, tenant, stripe_stub):
    customer, _ = subscribe_on_stripe(stripe_stub, tenant)

    me.post("/billing/checkout", CHECKOUT, format="json")

    assert stripe_stub.calls("POST", "/v1/customers") == []
    (created,) = stripe_stub.calls("POST", "/v1/checkout/sessions")
    assert created.params["customer"] == customer["id"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"priceId": "price_unknown"}, "priceId"),
        ({"priceId": ""}, "priceId"),
        ({"successUrl": "https://evil.example.com/x"}, "successUrl"),
        ({"successUrl": "//evil.example.com/x"}, "successUrl"),
        ({"successUrl": "javascript:alert(1)"}, "successUrl"),
        ({"cancelUrl": "/relative"}, "cancelUrl"),
        ({"cancelUrl": "https://testserver.evil.com/"}, "cancelUrl"),
        ({"cancelUrl": "https://user@evil.com/"}, "cancelUrl"),
        ({"cancelUrl": None}, "cancelUrl"),
    ],
)
def test_checkout_bad_input_is_400_and_sends_nothing(me, pro, stripe_stub, change, field):
    response = me.post("/billing/checkout", {**CHECKOUT, **change}, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert stripe_stub.requests == []


def test_checkout_refuses_an_inactive_plans_price(me, pro, stripe_stub):
    pro.active = False
    pro.save()
    response = me.post("/billing/checkout", CHECKOUT, format="json")
    assert response.status_code == 400 and "priceId" in response.json()


def test_checkout_hosts_follow_the_setting(me, pro, stripe_stub, settings):
    stripe_stub.price("price_pro")  # Checkout sells only a price Stripe has
    settings.BILLING_ALLOWED_REDIRECT_HOSTS = [".example.com"]
    body = {
        **CHECKOUT,
        "successUrl": "https://app.example.com/ok",
        "cancelUrl": "https://example.com/",
    }
    assert me.post("/billing/checkout", body, format="json").status_code == 200
    assert me.post("/billing/checkout", CHECKOUT, format="json").status_code == 400


def test_checkout_stripe_error_is_502(me, pro, stripe_stub):
    def refuse(request):
        if request.path == "/v1/checkout/sessions":
            raise RuntimeError("Stripe is down")

    stripe_stub.before = refuse
    response = me.post("/billing/checkout", CHECKOUT, format="json")
    assert response.status_code == 502
    assert "Stripe" in response.json()["detail"]


# --- portal --------------------------------------------------------------------------


def test_portal_session_for_the_tenants_customer(me, pro, tenant, stripe_stub):
    customer, _ = subscribe_on_stripe(stripe_stub, tenant)

    response = me.post(
        "/billing/portal", {"returnUrl": "https://testserver/settings"}, format="json"
    )

    assert response.status_code == 200
    (created,) = stripe_stub.calls("POST", "/v1/billing_portal/sessions")
    assert created.params == {
        "customer": customer["id"],
        "return_url": "https://testserver/settings",
    }
    assert response.json()["url"].startswith("https://billing.stripe.com/")


def test_portal_without_customer_is_409(me, stripe_stub):
    response = me.post("/billing/portal", {"returnUrl": "https://testserver/"}, format="json")
    assert response.status_code == 409
    assert stripe_stub.requests == []


def test_portal_refuses_foreign_return_url(me, pro, tenant, stripe_stub):
    subscribe_on_stripe(stripe_stub, tenant)
    requests = len(stripe_stub.requests)
    response = me.post("/billing/portal", {"returnUrl": "https://evil.com/"}, format="json")
    assert response.status_code == 400 and "returnUrl" in response.json()
    assert len(stripe_stub.requests) == requests


# --- cancel --------------------------------------------------------------------------


def test_cancel_at_period_end_asks_stripe_then_applies(me, pro, tenant, stripe_stub):
    _, sub = subscribe_on_stripe(stripe_stub, tenant)
    end = datetime.fromtimestamp(sub["items"]["data"][0]["current_period_end"], UTC)

    response = me.post("/billing/cancel", {}, format="json")

    assert response.status_code == 200
    assert response.json() == {"success": True, "cancelAt": end.isoformat().replace("+00:00", "Z")}
    (modify,) = stripe_stub.calls("POST", f"/v1/subscriptions/{sub['id']}")
    assert modify.params == {"cancel_at_period_end": "true"}
    subscription = Subscription.objects.get(user=tenant)
    assert subscription.cancel_at_period_end is True and subscription.status == "active"


def test_cancel_now(me, pro, tenant, stripe_stub):
    _, sub = subscribe_on_stripe(stripe_stub, tenant)

    response = me.post("/billing/cancel", {"when": "now"}, format="json")

    assert response.status_code == 200
    assert stripe_stub.calls("DELETE", f"/v1/subscriptions/{sub['id']}")
    subscription = Subscription.objects.get(user=tenant)
    assert subscription.status == "canceled"
    assert response.json()["cancelAt"] is not None


def test_cancel_without_stripe_changes_it_here(me, pro, tenant, stripe_stub):
    services.subscription_set(user=tenant, plan_key="pro")

    assert me.post("/billing/cancel", {"when": "end"}, format="json").status_code == 200
    assert Subscription.objects.get(user=tenant).cancel_at_period_end is True
    assert me.post("/billing/cancel", {"when": "now"}, format="json").status_code == 200
    assert Subscription.objects.get(user=tenant).status == "canceled"
    assert stripe_stub.requests == []


def test_cancel_bad_when_is_400(me, pro, tenant):
    services.subscription_set(user=tenant, plan_key="pro")
    response = me.post("/billing/cancel", {"when": "tomorrow"}, format="json")
    assert response.status_code == 400 and "when" in response.json()
    assert Subscription.objects.get(user=tenant).cancel_at_period_end is False


def test_cancel_without_subscription_is_409(me):
    assert me.post("/billing/cancel", {}, format="json").status_code == 409


def test_cancel_touches_only_my_subscription(pro, stripe_stub):
    mine, other = UserFactory(), UserFactory()
    subscribe_on_stripe(stripe_stub, mine)
    _, theirs = subscribe_on_stripe(stripe_stub, other)

    as_tenant(mine).post("/billing/cancel", {"when": "now"}, format="json")

    assert Subscription.objects.get(user=other).status == "active"
    assert stripe_stub.objects[theirs["id"]]["status"] == "active"


def test_schema_documents_the_self_service_endpoints(api):
    paths = api.get("/v1/schema/", {"format": "json"}).json()["paths"]
    for path in ["subscription", "usage", "invoices", "checkout", "portal", "cancel"]:
        assert f"/billing/{path}" in paths
    assert "/billing/webhook" not in paths  # Stripe's, not a client's
