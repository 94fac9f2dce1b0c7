"""Customer self-service: /billing/subscription, usage, invoices, checkout, portal, cancel,
reactivate."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import call_command
from djstripe.models import Customer
from rest_framework.test import APIClient

from billing_app.conf import customer_is_user
from billing_app.customers import services as customers
from billing_app.metering.services import usage_record
from billing_app.models import Problem, Subscription, UsageEvent
from billing_app.stripe.sync import subscription_sync
from billing_app.subscriptions import services as subscriptions

from ..factories import AccountKitFactory, CustomerFactory, PlanFactory, UserFactory
from ..utils import (
    expected,
    garble_next_answer,
    make_invoice,
    refuse,
    state_of,
    stripe_customer_for,
    subscribe_on_stripe,
)

pytestmark = pytest.mark.django_db


def as_customer(customer):
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {customers.tenant_token_issue(customer=customer)[1]}"
    )
    return client


@pytest.fixture
def me(customer_client):
    return customer_client


@pytest.fixture
def pro(db):
    kit = AccountKitFactory(key="kit_pro", allow={"seo": None, "llm.tokens": None, "aeo": None})
    return PlanFactory(
        key="pro",
        stripe_price_id="price_pro",
        account_kit=kit,
        limits={"seo": 1000, "llm.tokens": 50_000},
    )


def iso(instant):
    return instant.isoformat().replace("+00:00", "Z")


def from_stripe(timestamp):
    return datetime.fromtimestamp(timestamp, UTC)


# --- who may ask ---------------------------------------------------------------------


ENDPOINTS = [
    ("get", "/billing/subscription"),
    ("get", "/billing/usage"),
    ("get", "/billing/invoices"),
    ("post", "/billing/checkout"),
    ("post", "/billing/portal"),
    ("post", "/billing/cancel"),
    ("post", "/billing/reactivate"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_anonymous_is_401(anonymous, method, path):
    response = getattr(anonymous, method)(path, {}, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_operator_key_must_name_the_customer(api, method, path):
    assert getattr(api, method)(path, {}, format="json").status_code == 401


@pytest.mark.parametrize("header", ["HTTP_X_BILLING_CUSTOMER", "HTTP_X_BILLING_USER"])
def test_operator_key_acting_for_a_customer(api, pro, customer, header):
    subscriptions.subscription_set(customer=customer, plan_key="pro")
    response = api.get("/billing/subscription", **{header: str(customer.pk)})
    assert response.status_code == 200
    assert response.json()["plan"] == "pro"


def test_customer_token_cannot_act_for_another(me, pro):
    other = CustomerFactory()
    subscriptions.subscription_set(customer=other, plan_key="pro")
    response = me.get("/billing/subscription", HTTP_X_BILLING_CUSTOMER=str(other.pk))
    assert response.status_code == 403


@pytest.mark.skipif(not customer_is_user(), reason="customers are organisations here")
def test_a_token_of_a_deactivated_customer_is_refused(pro, customer):
    subscriptions.subscription_set(customer=customer, plan_key="pro")
    client = as_customer(customer)
    assert client.get("/billing/subscription").status_code == 200
    assert client.post("/demo/seo/", {}, format="json").status_code == 200

    customer.is_active = False
    customer.save()

    response = client.get("/billing/subscription")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert client.post("/demo/seo/", {}, format="json").status_code == 401
    assert UsageEvent.objects.count() == 1


def test_a_token_naming_a_deactivated_grantee_is_refused(pro, customer):
    """Whatever the token names as its user: the grantee (a user, also when customers are
    organisations) may not act once deactivated, nor may the token act for the customer."""
    subscriptions.subscription_set(customer=customer, plan_key="pro")
    grantee = UserFactory()
    client = APIClient()
    key = customers.tenant_token_issue(customer=customer, grantee=grantee)[1]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/billing/subscription").status_code == 200
    assert client.post("/demo/seo/", {}, format="json").status_code == 200

    grantee.is_active = False
    grantee.save()

    for path in ("/billing/subscription", "/billing/usage"):
        assert client.get(path).status_code == 401
    assert client.post("/billing/cancel", {}, format="json").status_code == 401
    assert Subscription.objects.get(customer=customer).cancel_at_period_end is False
    # Nor through the middleware, on a plain metered view: refused, and not counted.
    assert client.post("/demo/seo/", {}, format="json").status_code == 401
    assert UsageEvent.objects.count() == 1


def test_signed_in_user_acts_for_its_customer(client, pro, customer):
    """The user is the customer, or (organisations) holds one of its seats."""
    subscription = subscriptions.subscription_set(customer=customer, plan_key="pro")
    if customer_is_user():
        person = customer
    else:
        person = UserFactory()
        subscriptions.seats_manage(
            subscription_id=subscription.pk, operations=[{"type": "add", "grantee_id": person.pk}]
        )
    client.force_login(person)
    assert client.get("/billing/subscription").json()["plan"] == "pro"


# --- subscription --------------------------------------------------------------------


def test_subscription_404_when_none(me):
    response = me.get("/billing/subscription")
    assert response.status_code == 404


def test_subscription_shape(me, pro, customer, stripe_stub):
    _, sub = subscribe_on_stripe(stripe_stub, customer, cancel_at_period_end=True)
    item = sub["items"]["data"][0]

    body = me.get("/billing/subscription").json()

    assert body == {
        "id": sub["id"],
        "plan": "pro",
        "planName": "Pro",
        "trialEnd": None,
        "status": "active",
        "seats": 1,
        "currentPeriodStart": iso(from_stripe(item["current_period_start"])),
        "currentPeriodEnd": iso(from_stripe(item["current_period_end"])),
        "cancelAtPeriodEnd": True,
    }


def test_subscription_without_stripe_has_null_id(me, pro, customer):
    subscriptions.subscription_set(customer=customer, plan_key="pro")
    assert me.get("/billing/subscription").json()["id"] is None


# --- usage ---------------------------------------------------------------------------


def test_usage_names_each_primitive_and_its_limit(me, pro, customer):
    subscription = subscriptions.subscription_set(customer=customer, plan_key="pro")
    usage_record(customer_id=customer.pk, primitive="seo", quantity=15)
    usage_record(customer_id=customer.pk, primitive="llm.tokens", quantity=1200)

    body = me.get("/billing/usage").json()

    anchor = subscription.billing_cycle_anchor
    assert body["period"] == anchor.strftime("%Y-%m")
    assert body["periodStart"] == iso(anchor)
    assert body["usage"] == {
        "aeo": 0,
        "aeoLimit": None,  # in the kit, no quota: unlimited
        "llmTokens": 1200,
        "llmTokensLimit": 50_000,
        "seo": 15,
        "seoLimit": 1000,
    }


@pytest.mark.parametrize(
    ("limits", "usage"),
    [
        (
            {"email.send": 10, "email_send": 20},
            {"email.send": 1, "email.sendLimit": 10, "email_send": 2, "email_sendLimit": 20},
        ),
        (
            {"email": 10, "email.limit": 20},
            {"email": 1, "email.limit": 2, "email.limitLimit": 20, "emailLimit": 10},
        ),
    ],
    ids=["same-metric-name", "a-name-and-its-limit"],
)
def test_usage_keys_stay_distinct_when_metric_names_collide(me, customer, limits, usage):
    """Two primitives that would show under one key are shown under their slugs: no
    primitive's usage or limit hides another's."""
    kit = AccountKitFactory(key="kit_mail", allow=dict.fromkeys(limits))
    PlanFactory(key="mail", account_kit=kit, limits=limits)
    subscriptions.subscription_set(customer=customer, plan_key="mail")
    for quantity, primitive in enumerate(limits, start=1):
        usage_record(customer_id=customer.pk, primitive=primitive, quantity=quantity)

    assert me.get("/billing/usage").json()["usage"] == usage


def test_usage_is_the_customers_own(me, pro):
    other = CustomerFactory()
    subscriptions.subscription_set(customer=other, plan_key="pro")
    usage_record(customer_id=other.pk, primitive="seo", quantity=7)

    assert me.get("/billing/usage").json()["usage"] == {}


# --- invoices ------------------------------------------------------------------------


def test_invoices_newest_first_and_only_mine(me, pro, customer, stripe_stub):
    stripe_customer, _ = subscribe_on_stripe(stripe_stub, customer)
    older = make_invoice(stripe_stub, stripe_customer, created=1_767_225_600)
    newer = make_invoice(stripe_stub, stripe_customer, created=1_769_904_000, status="open")
    stranger = stripe_customer_for(stripe_stub, CustomerFactory())
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


def test_invoices_are_paginated(me, pro, customer, stripe_stub):
    stripe_customer, _ = subscribe_on_stripe(stripe_stub, customer)
    ids = [
        make_invoice(stripe_stub, stripe_customer, created=1_767_225_600 + n).id for n in range(5)
    ]

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


def test_checkout_creates_a_subscription_session(me, pro, customer, stripe_stub):
    stripe_stub.price("price_pro")  # Stripe checks out only a price it has
    response = me.post("/billing/checkout", CHECKOUT, format="json")

    assert response.status_code == 200, response.content
    (created,) = stripe_stub.calls("POST", "/v1/checkout/sessions")
    sent = created.params
    stripe_customer = Customer.objects.get(subscriber=customer)
    assert sent["mode"] == "subscription"
    assert sent["line_items"] == [{"price": "price_pro", "quantity": "1"}]
    assert sent["customer"] == stripe_customer.id
    assert sent["success_url"] == CHECKOUT["successUrl"]
    assert sent["cancel_url"] == CHECKOUT["cancelUrl"]
    assert sent["client_reference_id"] == str(customer.pk)
    assert sent["subscription_data"]["metadata"] == {"billing_customer": str(customer.pk)}
    assert response.json() == {"url": stripe_stub.objects[_session_id(response)]["url"]}
    # The Stripe customer was created with the link to the customer in its metadata.
    (made,) = stripe_stub.calls("POST", "/v1/customers")
    assert made.params["metadata"] == {
        "billing_customer": str(customer.pk),
        "djstripe_subscriber": str(customer.pk),
    }


def _session_id(response):
    return response.json()["url"].rsplit("/", 1)[1]


def test_checkout_reuses_the_customers_stripe_customer(me, pro, customer, stripe_stub):
    stripe_customer, sub = subscribe_on_stripe(stripe_stub, customer)
    stripe_stub.update(sub["id"], status="canceled", ended_at=sub["created"] + 60)
    subscription_sync(sub["id"])  # it ended: a new one goes through Checkout

    response = me.post("/billing/checkout", CHECKOUT, format="json")

    assert response.status_code == 200, response.content
    assert stripe_stub.calls("POST", "/v1/customers") == []
    (created,) = stripe_stub.calls("POST", "/v1/checkout/sessions")
    assert created.params["customer"] == stripe_customer["id"]


def test_checkout_refuses_a_second_live_stripe_subscription(me, pro, customer, stripe_stub):
    """A second Checkout would make a second live subscription: change plan instead."""
    subscribe_on_stripe(stripe_stub, customer)
    requests = len(stripe_stub.requests)

    response = me.post("/billing/checkout", CHECKOUT, format="json")

    assert response.status_code == 409
    assert "priceId" in response.json()
    assert len(stripe_stub.requests) == requests


def test_checkout_after_an_operator_plan_is_allowed(me, pro, customer, stripe_stub):
    """A subscription no Stripe subscription drives is not a second Stripe one."""
    stripe_stub.price("price_pro")  # Stripe checks out only a price it has
    subscriptions.subscription_set(customer=customer, plan_key="pro")
    assert me.post("/billing/checkout", CHECKOUT, format="json").status_code == 200


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"priceId": "price_unknown"}, "priceId"),
        ({"priceId": ""}, "priceId"),
        ({"successUrl": "https://evil.example.com/x"}, "successUrl"),
        ({"successUrl": "//evil.example.com/x"}, "successUrl"),
        ({"successUrl": "javascript:alert(1)"}, "successUrl"),
        ({"successUrl": "https://testserver\\@evil.com/"}, "successUrl"),
        ({"successUrl": "https:\\\\evil.com/"}, "successUrl"),
        ({"successUrl": "https://[::1/"}, "successUrl"),
        ({"successUrl": "https://testserver:99999/"}, "successUrl"),
        ({"cancelUrl": "/relative"}, "cancelUrl"),
        ({"cancelUrl": "https://testserver.evil.com/"}, "cancelUrl"),
        ({"cancelUrl": "https://user@evil.com/"}, "cancelUrl"),
        ({"cancelUrl": "https://evil.com@testserver/"}, "cancelUrl"),
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
    stripe_stub.price("price_pro")  # Stripe checks out only a price it has
    settings.BILLING_ALLOWED_REDIRECT_HOSTS = [".example.com"]
    body = {
        **CHECKOUT,
        "successUrl": "https://app.example.com/ok",
        "cancelUrl": "https://example.com/",
    }
    assert me.post("/billing/checkout", body, format="json").status_code == 200
    assert me.post("/billing/checkout", CHECKOUT, format="json").status_code == 400


# Stripe's own words carry request ids, hosts and support addresses: for the log only.
RAW = "Request req_8fJk2: internal error at api-17.stripe.internal, contact support@stripe.com"
SHORT = {"detail": "Stripe could not do this now; nothing was changed."}


@pytest.mark.parametrize("path", ["/v1/checkout/sessions", "/v1/customers"])
def test_checkout_stripe_error_is_502_with_a_short_message(me, pro, stripe_stub, caplog, path):
    refuse(stripe_stub, "POST", path, RAW)

    response = me.post("/billing/checkout", CHECKOUT, format="json")

    assert response.status_code == 502
    assert response.json() == SHORT
    assert "req_8fJk2" in caplog.text  # the detail is in the log


# --- portal --------------------------------------------------------------------------


def test_portal_session_for_the_customers_stripe_customer(me, pro, customer, stripe_stub):
    stripe_customer, _ = subscribe_on_stripe(stripe_stub, customer)

    response = me.post(
        "/billing/portal", {"returnUrl": "https://testserver/settings"}, format="json"
    )

    assert response.status_code == 200
    (created,) = stripe_stub.calls("POST", "/v1/billing_portal/sessions")
    assert created.params == {
        "customer": stripe_customer["id"],
        "return_url": "https://testserver/settings",
    }
    assert response.json()["url"].startswith("https://billing.stripe.com/")


def test_portal_without_stripe_customer_is_409(me, stripe_stub):
    response = me.post("/billing/portal", {"returnUrl": "https://testserver/"}, format="json")
    assert response.status_code == 409
    assert stripe_stub.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.com/",
        "http://[::1/",
        "https://[::1/",
        "https://testserver:99999/",
        "https:\\\\evil.com/",
        "https://testserver\\@evil.com/",
        "http://[not-an-address]/",
    ],
)
def test_portal_refuses_foreign_or_unparseable_return_url(me, pro, customer, stripe_stub, url):
    subscribe_on_stripe(stripe_stub, customer)
    requests = len(stripe_stub.requests)
    response = me.post("/billing/portal", {"returnUrl": url}, format="json")
    assert response.status_code == 400 and "returnUrl" in response.json()
    assert len(stripe_stub.requests) == requests


def test_portal_stripe_error_is_502_with_a_short_message(me, pro, customer, stripe_stub):
    subscribe_on_stripe(stripe_stub, customer)
    refuse(stripe_stub, "POST", "/v1/billing_portal/sessions", RAW)

    response = me.post("/billing/portal", {"returnUrl": "https://testserver/"}, format="json")

    assert response.status_code == 502
    assert response.json() == SHORT


# --- cancel --------------------------------------------------------------------------


def test_cancel_at_period_end_asks_stripe_then_applies(me, pro, customer, stripe_stub):
    _, sub = subscribe_on_stripe(stripe_stub, customer)
    end = from_stripe(sub["items"]["data"][0]["current_period_end"])

    response = me.post("/billing/cancel", {}, format="json")

    assert response.status_code == 200
    assert response.json() == {"success": True, "cancelAt": iso(end)}
    (modify,) = stripe_stub.calls("POST", f"/v1/subscriptions/{sub['id']}")
    assert modify.params == {"cancel_at_period_end": "true"}
    subscription = Subscription.objects.get(customer=customer)
    assert subscription.cancel_at_period_end is True and subscription.status == "active"


def test_cancel_now(me, pro, customer, stripe_stub):
    _, sub = subscribe_on_stripe(stripe_stub, customer)

    response = me.post("/billing/cancel", {"when": "now"}, format="json")

    assert response.status_code == 200
    assert stripe_stub.calls("DELETE", f"/v1/subscriptions/{sub['id']}")
    subscription = Subscription.objects.get(customer=customer)
    assert subscription.status == "canceled"
    assert response.json()["cancelAt"] == iso(subscription.ended_at)
    assert subscription.ended_at == from_stripe(stripe_stub.objects[sub["id"]]["ended_at"])


def test_cancel_without_stripe_changes_it_here(me, pro, customer, stripe_stub):
    subscriptions.subscription_set(customer=customer, plan_key="pro")

    assert me.post("/billing/cancel", {"when": "end"}, format="json").status_code == 200
    assert Subscription.objects.get(customer=customer).cancel_at_period_end is True
    assert me.post("/billing/cancel", {"when": "now"}, format="json").status_code == 200
    assert Subscription.objects.get(customer=customer).status == "canceled"
    assert stripe_stub.requests == []


def test_cancel_bad_when_is_400(me, pro, customer):
    subscriptions.subscription_set(customer=customer, plan_key="pro")
    response = me.post("/billing/cancel", {"when": "tomorrow"}, format="json")
    assert response.status_code == 400 and "when" in response.json()
    assert Subscription.objects.get(customer=customer).cancel_at_period_end is False


@pytest.mark.parametrize(
    ("body", "field"),
    [('{"when": "\\ud800"}', "when"), ('{"when": ' + "[" * 100_000 + "]" * 100_000 + "}", None)],
    ids=["lone-surrogate", "nested"],
)
def test_cancel_json_python_cannot_take_is_400_and_changes_nothing(me, pro, customer, body, field):
    subscriptions.subscription_set(customer=customer, plan_key="pro")

    response = me.post("/billing/cancel", body, content_type="application/json")

    assert response.status_code == 400
    if field is not None:
        assert set(response.json()) == {field}, response.json()
    assert Subscription.objects.get(customer=customer).cancel_at_period_end is False


def test_cancel_without_subscription_is_409(me):
    assert me.post("/billing/cancel", {}, format="json").status_code == 409


def test_cancel_touches_only_my_subscription(pro, stripe_stub):
    mine, other = CustomerFactory(), CustomerFactory()
    subscribe_on_stripe(stripe_stub, mine)
    _, theirs = subscribe_on_stripe(stripe_stub, other)

    as_customer(mine).post("/billing/cancel", {"when": "now"}, format="json")

    assert Subscription.objects.get(customer=other).status == "active"
    assert stripe_stub.objects[theirs["id"]]["status"] == "active"


@pytest.mark.parametrize("when", ["end", "now"])
def test_cancel_stripe_error_is_502_and_changes_nothing(me, pro, customer, stripe_stub, when):
    _, sub = subscribe_on_stripe(stripe_stub, customer)
    refuse(
        stripe_stub, "DELETE" if when == "now" else "POST", f"/v1/subscriptions/{sub['id']}", RAW
    )
    before = state_of(customer)

    response = me.post("/billing/cancel", {"when": when}, format="json")

    assert response.status_code == 502
    assert response.json() == SHORT
    assert state_of(customer) == before


@pytest.mark.parametrize("path", ["/billing/cancel", "/billing/reactivate"])
def test_a_change_stripe_refuses_is_409_and_changes_nothing(
    me, pro, customer, stripe_stub, caplog, path
):
    """The subscription was canceled on Stripe while it is live here (the operator set it
    active again, say): Stripe refuses to change it. A conflict with Stripe's state, not
    a failing gateway."""
    _, sub = subscribe_on_stripe(stripe_stub, customer, cancel_at_period_end=True)
    stripe_stub.objects[sub["id"]]["status"] = "canceled"
    before = state_of(customer)

    response = me.post(path, {"when": "end"}, format="json")

    assert response.status_code == 409
    assert response.json() == {
        "detail": "Stripe refused this for the subscription as Stripe holds it; "
        "nothing was changed."
    }
    assert "canceled subscription" in caplog.text  # Stripe's words, for the log only
    assert state_of(customer) == before


def test_cancel_accepted_by_stripe_but_not_applied_is_202_until_the_sync(
    me, pro, customer, stripe_stub
):
    """Stripe cancelled, but its answer did not reach us as a subscription (a proxy's
    page): the customer is told it is underway, the operator sees a problem, and the
    next sync applies what Stripe holds."""
    _, sub = subscribe_on_stripe(stripe_stub, customer)
    sub_id = sub["id"]
    garble_next_answer(stripe_stub, "POST", f"/v1/subscriptions/{sub_id}", {"message": "timeout"})

    response = me.post("/billing/cancel", {}, format="json")

    assert response.status_code == 202
    assert "sync" in response.json()["detail"]
    assert stripe_stub.objects[sub_id]["cancel_at_period_end"] is True
    assert state_of(customer)["cancel_at_period_end"] is False
    problem = Problem.objects.get()
    assert (problem.kind, problem.subject) == (Problem.Kind.STRIPE_NOT_APPLIED, f"stripe:{sub_id}")

    call_command("billing_sync_subscriptions", stdout=StringIO(), stderr=StringIO())

    assert state_of(customer) == expected(stripe_stub.objects[sub_id])
    assert not Problem.objects.exists()


def test_cancel_accepted_by_stripe_whose_apply_fails_is_202(
    me, pro, customer, stripe_stub, monkeypatch
):
    from django.db import OperationalError

    from billing_app.stripe import sync

    _, sub = subscribe_on_stripe(stripe_stub, customer, start=int(time.time()) - 86400)

    def lost_connection(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    with monkeypatch.context() as patched:
        patched.setattr(sync, "subscription_set", lost_connection)
        response = me.post("/billing/cancel", {"when": "now"}, format="json")

    assert response.status_code == 202
    assert Problem.objects.get(subject=f"stripe:{sub['id']}").kind == "stripe_not_applied"
    assert state_of(customer)["status"] == "active"

    call_command("billing_sync_subscriptions", stdout=StringIO(), stderr=StringIO())

    assert state_of(customer) == expected(stripe_stub.objects[sub["id"]])
    assert state_of(customer)["status"] == "canceled"
    assert not Problem.objects.exists()


# --- reactivate ----------------------------------------------------------------------


def test_reactivate_undoes_a_pending_cancellation_on_stripe(me, pro, customer, stripe_stub):
    _, sub = subscribe_on_stripe(stripe_stub, customer)
    assert me.post("/billing/cancel", {}, format="json").status_code == 200

    response = me.post("/billing/reactivate", {}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["cancelAtPeriodEnd"] is False
    *_, undo = stripe_stub.calls("POST", f"/v1/subscriptions/{sub['id']}")
    assert undo.params == {"cancel_at_period_end": "false"}
    assert stripe_stub.objects[sub["id"]]["cancel_at_period_end"] is False
    assert state_of(customer) == expected(stripe_stub.objects[sub["id"]])


def test_reactivate_when_not_cancelling_is_409_and_asks_nothing(me, pro, customer, stripe_stub):
    subscribe_on_stripe(stripe_stub, customer)
    requests = len(stripe_stub.requests)

    assert me.post("/billing/reactivate", {}, format="json").status_code == 409
    assert len(stripe_stub.requests) == requests


def test_reactivate_without_stripe_changes_it_here(me, pro, customer, stripe_stub):
    subscriptions.subscription_set(customer=customer, plan_key="pro", cancel_at_period_end=True)

    assert me.post("/billing/reactivate", {}, format="json").status_code == 200
    assert Subscription.objects.get(customer=customer).cancel_at_period_end is False
    assert stripe_stub.requests == []


def test_reactivate_stripe_error_is_502_with_a_short_message(me, pro, customer, stripe_stub):
    _, sub = subscribe_on_stripe(stripe_stub, customer)
    me.post("/billing/cancel", {}, format="json")
    refuse(stripe_stub, "POST", f"/v1/subscriptions/{sub['id']}", RAW)

    response = me.post("/billing/reactivate", {}, format="json")

    assert response.status_code == 502
    assert response.json() == SHORT
    assert Subscription.objects.get(customer=customer).cancel_at_period_end is True


def test_schema_documents_the_self_service_endpoints(api):
    paths = api.get("/v1/schema/", {"format": "json"}).json()["paths"]
    for path in ["subscription", "usage", "invoices", "checkout", "portal", "cancel", "reactivate"]:
        assert f"/billing/{path}" in paths
    assert "/billing/webhook" not in paths  # Stripe's, not a client's
