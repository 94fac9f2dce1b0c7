"""Metering and enforcement, through real requests: the demo views (``@metered`` behind
``QuotaMiddleware``), the test views in ``tests/views.py`` and the DRF ``MeteredMixin``.

Each rule of the metering issue has a test here that fails without it. The autouse ledger
check in ``conftest`` also proves, after every test, that counters equal their events.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from billing_app import entitlements
from billing_app.catalog import services as catalog
from billing_app.conf import customer_id_json
from billing_app.customers import services as customers
from billing_app.exceptions import BillingImproperlyConfigured
from billing_app.metering import services as metering
from billing_app.models import (
    AccountKit,
    KitAssignment,
    KitPrimitive,
    Plan,
    PlanQuota,
    RateCounter,
    Subscription,
    UsageCounter,
    UsageEvent,
)
from billing_app.periods import add_months, window_for
from billing_app.subscriptions import services as subscriptions
from billing_app.testutils import subscribe

from .factories import CustomerFactory
from .utils import (
    FailingCache,
    absent_customer_id,
    assert_refused,
    bearer,
    counters_of,
    events_of,
    iso,
    post_json,
    ratelimit_field,
    session_client,
    used_now,
    window_now,
)

pytestmark = pytest.mark.django_db

SEO = "/demo/seo/"
AEO = "/demo/aeo/"
INACTIVE = ["canceled", "unpaid", "incomplete", "incomplete_expired", "paused"]


def post(client: Client, path: str = SEO, body: dict | None = None):
    return post_json(client, path, body)


@pytest.fixture
def client(customer_token) -> Client:
    return bearer(customer_token)


# Who is metered


def test_each_successful_call_records_one_event_and_raises_the_counter(customer, client):
    subscription = subscribe(customer, quotas={"seo": 3})
    # The window is the month from the subscription's anchor, not the calendar month.
    anchor = subscription.billing_cycle_anchor
    window = window_now(customer)
    assert (window.start, window.end) == (anchor, add_months(anchor, 1))

    for n in (1, 2, 3):
        response = post(client)

        assert response.status_code == 200, response.content
        assert response.json() == {"primitive": "seo", "ok": True}
        assert events_of(customer) == n
        assert counters_of(customer) == {("seo", window.start): n}
        state = ratelimit_field(response["RateLimit"])
        assert state["name"] == "seo"
        assert int(state["r"]) == 3 - n
        assert 0 < int(state["t"]) <= (window.end - window.start).total_seconds()
        policy = ratelimit_field(response["RateLimit-Policy"])
        assert policy == {
            "name": "seo",
            "q": "3",
            "w": str(int((window.end - window.start).total_seconds())),
        }

    event = UsageEvent.objects.filter(customer_id=customer.pk).latest("pk")
    assert (event.quantity, event.window_start, event.idempotency_key) == (1, window.start, "")


def test_a_session_user_is_metered_as_the_customer(customer):
    subscribe(customer, quotas={"seo": 3})

    assert post(session_client(customer)).status_code == 200
    assert events_of(customer) == 1


@pytest.mark.parametrize("header", ["X-Billing-Customer", "X-Billing-User"])
def test_an_operator_key_acts_for_the_customer_it_names(operator_key, customer, header):
    subscribe(customer, quotas={"seo": 1})
    bystander = CustomerFactory()
    client = bearer(operator_key, **{header: str(customer.pk)})

    assert post(client).status_code == 200
    assert events_of(customer) == 1
    assert events_of(bystander) == 0
    # And it is the customer's quota that runs out.
    assert post(client).status_code == 429
    assert events_of(customer) == 1


@pytest.mark.parametrize(
    ("credentials", "status"),
    [
        pytest.param(lambda op, tk, other: {"Authorization": f"Bearer {op}"}, 401, id="operator"),
        pytest.param(
            lambda op, tk, other: {
                "Authorization": f"Bearer {tk}",
                "X-Billing-Customer": str(other.pk),
            },
            403,
            id="customer-token-naming-another-customer",
        ),
        pytest.param(lambda op, tk, other: {}, 401, id="anonymous"),
        pytest.param(lambda op, tk, other: {"Authorization": "Bearer tk_nope.nope"}, 401, id="bad"),
        pytest.param(
            lambda op, tk, other: {
                "Authorization": f"Bearer {op}",
                "X-Billing-Customer": str(absent_customer_id()),
            },
            404,
            id="unknown-customer",
        ),
        pytest.param(
            lambda op, tk, other: {"Authorization": f"Bearer {op}", "X-Billing-Customer": "nobody"},
            404,
            id="malformed-customer",
        ),
    ],
)
def test_a_call_without_a_customer_to_charge_is_refused(
    operator_key, customer_token, customer, credentials, status
):
    subscribe(customer, quotas={"seo": 5})
    other = CustomerFactory()
    client = Client(headers=credentials(operator_key, customer_token, other))

    response = post(client)

    assert response.status_code == status, response.content
    assert UsageEvent.objects.count() == 0
    assert UsageCounter.objects.count() == 0
    if status == 401:
        assert response["WWW-Authenticate"].startswith("Bearer")


# Over quota


@pytest.mark.parametrize(
    ("configured", "status", "error"),
    [(None, 429, "rate_limited"), (429, 429, "rate_limited"), (402, 402, "usage_limit_exceeded")],
)
def test_over_quota_is_refused_with_the_contract_body(
    settings, customer, client, configured, status, error
):
    if configured is not None:
        settings.BILLING_QUOTA_EXCEEDED_STATUS = configured
    subscribe(customer, quotas={"seo": 2})
    assert [post(client).status_code for _ in range(2)] == [200, 200]
    window = window_now(customer)

    response = post(client)

    assert response.status_code == status
    body = response.json()
    assert body == {
        "error": error,
        "message": body["message"],
        "primitive": "seo",
        "usage": {"current": 2, "limit": 2},
        "resetsAt": iso(window.end),
    }
    assert isinstance(body["message"], str) and body["message"]
    seconds_left = math.ceil((window.end - timezone.now()).total_seconds())
    assert abs(int(response["Retry-After"]) - seconds_left) <= 2
    # The refusal carries the limit's state, as an admitted call does.
    assert ratelimit_field(response["RateLimit"])["r"] == "0"
    assert ratelimit_field(response["RateLimit-Policy"])["q"] == "2"
    # Nothing recorded for the refused call.
    assert events_of(customer) == 2
    assert counters_of(customer) == {("seo", window.start): 2}


def test_a_quota_of_zero_refuses_every_call(customer, client):
    subscribe(customer, quotas={"seo": 0})

    for _ in range(2):
        body = assert_refused(post(client), 429, "rate_limited")
        assert body["usage"] == {"current": 0, "limit": 0}
    assert events_of(customer) == 0


def test_a_primitive_without_quota_is_unlimited_but_recorded(customer, client):
    subscribe(customer, quotas={"seo": 1})

    responses = [post(client, AEO) for _ in range(5)]

    assert [r.status_code for r in responses] == [200] * 5
    assert "RateLimit" not in responses[-1]
    assert events_of(customer, "aeo") == 5
    assert used_now(customer, "aeo") == 5


# Account Kits


def test_a_primitive_outside_the_kit_is_refused(customer, client):
    subscribe(customer, quotas={"seo": 5}, primitives=["seo"])

    response = post(client, AEO)

    body = assert_refused(response, 403, "primitive_not_allowed", primitive="aeo")
    assert set(body) == {"error", "message", "primitive"}
    assert UsageEvent.objects.count() == 0
    assert post(client, SEO).status_code == 200


@pytest.mark.parametrize("subscribed", [True, False], ids=["subscribed", "unsubscribed"])
def test_a_customer_without_a_kit_is_not_gated(customer, client, subscribed):
    if subscribed:
        subscribe(customer, quotas={"seo": 5})
    assert not KitAssignment.objects.filter(customer_id=customer.pk).exists()

    assert post(client, "/demo/email.send/").status_code == 200
    assert events_of(customer, "email.send") == 1


@pytest.fixture
def rate_limited_kit(customer):
    """A kit allowing seo at 2 calls a minute, and aeo without a rate."""
    kit, _ = catalog.account_kit_upsert(key="slow", name="Slow", primitives={"seo": 2, "aeo": None})
    customers.kit_assign(customer=customer, kit=kit)
    return kit


def test_the_kit_rate_limit_refuses_the_call_after_the_rate(
    rate_minute, customer, client, rate_limited_kit
):
    assert [post(client).status_code for _ in range(2)] == [200, 200]

    response = post(client)

    body = assert_refused(response, 429, "too_many_requests")
    assert body["usage"] == {"current": 2, "limit": 2}
    assert 1 <= int(response["Retry-After"]) <= 60
    assert ratelimit_field(response["RateLimit-Policy"]) == {"name": "seo", "q": "2", "w": "60"}
    assert ratelimit_field(response["RateLimit"])["r"] == "0"
    assert events_of(customer) == 2
    # Another primitive and another customer have their own count.
    assert post(client, AEO).status_code == 200
    other = CustomerFactory()
    customers.kit_assign(customer=other, kit=rate_limited_kit)
    assert post(bearer(customers.tenant_token_issue(customer=other)[1])).status_code == 200
    # The next minute admits calls again.
    rate_minute.advance()
    assert post(client).status_code == 200
    assert events_of(customer) == 3


def test_a_call_refused_by_the_quota_leaves_its_rate_slot(rate_minute, customer, client):
    catalog.account_kit_upsert(key="slow", name="Slow", primitives={"seo": 3})
    catalog.plan_upsert(key="small", name="Small", account_kit_id="slow", quotas={"seo": 2})
    subscriptions.subscription_set(customer=customer, plan_key="small")
    assert [post(client).status_code for _ in range(2)] == [200, 200]
    assert_refused(post(client), 429, "rate_limited")  # the quota, not the rate

    catalog.plan_upsert(key="small", name="Small", quotas={"seo": 10})

    # The refused call did not count towards the 3 a minute: one more fits.
    assert post(client).status_code == 200
    assert_refused(post(client), 429, "too_many_requests")
    assert RateCounter.objects.get(customer_id=customer.pk).calls == 3


# Subscriptions


@pytest.mark.parametrize("period", ["month", "day"])
def test_a_customer_without_subscription_is_not_limited_but_recorded(
    settings, customer, client, period
):
    settings.BILLING_DEFAULT_PERIOD = period

    responses = [post(client) for _ in range(5)]

    assert [r.status_code for r in responses] == [200] * 5
    assert "RateLimit" not in responses[-1]
    window = window_for(period, timezone.now())  # the calendar: no anchor to count from
    assert counters_of(customer) == {("seo", window.start): 5}
    assert events_of(customer) == 5


def _past_due_since(customer, ago: timedelta) -> None:
    subscribe(customer, quotas={"seo": 1}, status="past_due", at=timezone.now() - ago)


@pytest.mark.parametrize(
    "arrange",
    [
        pytest.param(
            lambda customer: subscribe(customer, quotas={"seo": 1}, status="trialing"), id="trial"
        ),
        pytest.param(
            lambda customer: subscribe(customer, quotas={"seo": 1}, status="active"), id="active"
        ),
        pytest.param(
            lambda customer: _past_due_since(customer, timedelta(days=2)), id="past-due-2-days"
        ),
    ],
)
def test_usable_subscriptions_get_the_plan_quotas(customer, client, arrange):
    arrange(customer)

    assert post(client).status_code == 200
    body = assert_refused(post(client), 429, "rate_limited")
    assert body["usage"] == {"current": 1, "limit": 1}
    assert events_of(customer) == 1


@pytest.mark.parametrize(
    ("ago", "grace", "allowed"),
    [
        (timedelta(days=2, hours=23), None, True),
        (timedelta(days=3, minutes=1), None, False),
        (timedelta(days=4), timedelta(days=7), True),
        (timedelta(hours=1), timedelta(minutes=30), False),
    ],
)
def test_past_due_keeps_the_quotas_for_the_grace_then_is_refused(
    settings, customer, client, ago, grace, allowed
):
    if grace is not None:
        settings.BILLING_PAST_DUE_GRACE = grace
    _past_due_since(customer, ago)

    response = post(client)

    if allowed:
        assert response.status_code == 200
        assert events_of(customer) == 1
    else:
        assert_refused(response, 402, "subscription_inactive")
        assert events_of(customer) == 0


@pytest.mark.parametrize("status", INACTIVE)
def test_inactive_subscriptions_are_refused(customer, client, status):
    subscribe(customer, quotas={"seo": 100}, status=status)

    response = post(client)

    body = assert_refused(response, 402, "subscription_inactive")
    assert set(body) == {"error", "message", "primitive"}
    assert UsageEvent.objects.count() == 0


@pytest.mark.parametrize("status", INACTIVE)
def test_inactive_subscriptions_get_the_fallback_plan_quotas(settings, customer, client, status):
    catalog.plan_upsert(key="free", name="Free", quotas={"seo": 1})
    settings.BILLING_FALLBACK_PLAN = "free"
    subscribe(customer, quotas={"seo": 100}, status=status)

    first, second = post(client), post(client)

    assert first.status_code == 200
    assert ratelimit_field(first["RateLimit-Policy"])["q"] == "1"
    body = assert_refused(second, 429, "rate_limited")
    assert body["usage"] == {"current": 1, "limit": 1}
    assert events_of(customer) == 1


def test_after_a_cancel_both_usage_endpoints_answer_the_fallback_quotas(
    settings, api, customer, client
):
    """One answer: the quotas enforcement applies after a cancel (the fallback plan's) are
    the ones GET /v1/users/<id>/billing/usage and GET /billing/usage show."""
    catalog.plan_upsert(key="free", name="Free", quotas={"seo": 2, "aeo": 5})
    settings.BILLING_FALLBACK_PLAN = "free"
    subscribe(customer, quotas={"seo": 100, "llm.tokens": 1000})
    assert post(client).status_code == 200

    cancel = post_json(client, "/billing/cancel", {"when": "now"})
    assert cancel.status_code == 200, cancel.content

    operator = api.get(f"/v1/users/{customer_id_json(customer.pk)}/billing/usage").json()
    own = client.get("/billing/usage").json()
    assert operator["plan"] == "free"
    assert operator["quotas"] == {"seo": 2, "aeo": 5}
    assert {k: v for k, v in own["usage"].items() if k.endswith("Limit")} == {
        "seoLimit": 2,
        "aeoLimit": 5,
    }
    # Enforcement agrees: what the endpoints say is left is what the view admits.
    left = operator["quotas"]["seo"] - operator["usage"].get("seo", 0)
    assert own["usage"]["seo"] == operator["usage"].get("seo", 0)
    statuses = [post(client).status_code for _ in range(left + 1)]
    assert statuses == [200] * left + [429]


# A failed call costs nothing


@pytest.mark.parametrize(
    ("fail", "status"),
    [
        pytest.param(lambda client: post(client, SEO, {"simulate": "error"}), 502, id="error"),
        pytest.param(lambda client: post(client, SEO, {"simulate": "exception"}), 500, id="raise"),
        pytest.param(lambda client: client.get(SEO), 405, id="wrong-method"),
    ],
)
def test_a_failed_call_costs_nothing(customer, customer_token, fail, status):
    subscribe(customer, quotas={"seo": 2})
    client = bearer(customer_token)
    client.raise_request_exception = False
    assert post(client).status_code == 200
    before = counters_of(customer)

    response = fail(client)

    assert response.status_code == status
    assert events_of(customer) == 1
    assert counters_of(customer) == before
    # The refunded unit can be used: the quota of 2 still admits one more call.
    assert post(client).status_code == 200
    assert post(client).status_code == 429


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("query", "status"),
    [("", 500), ("?catch=1", 503), ("?atomic=0", 500)],
    ids=["raises", "answers-503", "outside-atomic"],
)
def test_a_database_error_in_the_view_is_refunded(customer, customer_token, query, status):
    subscribe(customer, quotas={"seo": 1})
    client = bearer(customer_token)
    client.raise_request_exception = False

    response = post(client, "/test/seo-db-error/" + query)

    assert response.status_code == status
    assert UsageEvent.objects.count() == 0
    assert set(counters_of(customer).values()) <= {0}
    # The one unit of quota is still there.
    assert post(client).status_code == 200


def test_a_quantity_callable_of_the_request_is_reserved(customer, client):
    subscribe(customer, quotas={"seo": 5})

    assert post(client, "/test/seo-pages/", {"pages": 3}).status_code == 200
    assert list(UsageEvent.objects.values_list("quantity", flat=True)) == [3]
    assert used_now(customer) == 3

    body = assert_refused(post(client, "/test/seo-pages/", {"pages": 3}), 429, "rate_limited")
    assert body["usage"] == {"current": 3, "limit": 5}
    assert post(client, "/test/seo-pages/", {"pages": 2}).status_code == 200
    assert used_now(customer) == 5


@pytest.mark.parametrize("pages", [0, -1, "3", None, True, 2**63])
def test_a_bad_quantity_is_a_400_naming_quantity(customer, client, pages):
    response = post(client, "/test/seo-pages/", {"pages": pages})

    assert response.status_code == 400
    assert "quantity" in response.json()
    assert UsageEvent.objects.count() == 0


def test_a_metered_view_without_the_middleware_fails_loudly(customer, client):
    middleware = [m for m in django_settings.MIDDLEWARE if not m.endswith("QuotaMiddleware")]
    subscribe(customer, quotas={"seo": 5})

    with override_settings(MIDDLEWARE=middleware), pytest.raises(BillingImproperlyConfigured):
        post(client)
    assert UsageEvent.objects.count() == 0


# ... under ATOMIC_REQUESTS too


FAILURES = [("status", 503), ("validation", 400), ("not_found", 404), ("exception", 500)]


@pytest.mark.parametrize(
    "transactional",
    [
        pytest.param(True, marks=pytest.mark.django_db(transaction=True), id="own-transaction"),
        # The request's transaction is then a savepoint in one the exception never reaches.
        pytest.param(False, id="inside-an-outer-transaction"),
    ],
)
@pytest.mark.parametrize("path", ["/test/seo-answer/", "/test/reports/"], ids=["metered", "drf"])
@pytest.mark.parametrize(("fail", "status"), FAILURES)
def test_under_atomic_requests_a_failed_call_costs_nothing(
    atomic_requests, customer, customer_token, transactional, path, fail, status
):
    subscribe(customer, quotas={"seo": 1})
    client = bearer(customer_token)
    client.raise_request_exception = False

    response = post(client, path, {"fail": fail})

    assert response.status_code == status, response.content  # a 4xx stays a 4xx
    assert not UsageEvent.objects.exists()
    assert set(counters_of(customer).values()) <= {0}
    # The one unit of quota is still there, and a call that succeeds is recorded.
    succeeded = post(client, path)
    assert succeeded.status_code == 200
    assert succeeded.json()["atomic"] is True
    assert events_of(customer) == 1
    assert_refused(post(client, path), 429, "rate_limited")
    assert events_of(customer) == 1


# A HEAD runs the GET handler, and a function view runs its body for an OPTIONS: both are
# metered. Only an OPTIONS that DRF (or Django) answers itself, running no handler, is not.


def _nothing_left(customer) -> None:
    catalog.account_kit_upsert(key="slow", name="Slow", primitives={"seo": 1})
    catalog.plan_upsert(key="none-left", name="None left", account_kit_id="slow", quotas={"seo": 0})
    subscriptions.subscription_set(customer=customer, plan_key="none-left")


@pytest.mark.parametrize(
    ("method", "path"),
    [("head", "/test/seo-pages/"), ("options", "/test/seo-pages/"), ("head", "/test/pages/")],
    ids=["head-metered", "options-metered", "head-drf"],
)
def test_a_method_that_runs_the_view_is_metered(
    rate_minute, customer, customer_token, method, path
):
    _nothing_left(customer)

    refused = getattr(bearer(customer_token), method)(path)
    anonymous = getattr(Client(), method)(path)

    assert refused.status_code == 429
    assert anonymous.status_code == 401
    assert not UsageEvent.objects.exists()


def test_an_options_drf_answers_itself_is_not_metered(rate_minute, customer, customer_token):
    _nothing_left(customer)
    client = bearer(customer_token)

    responses = [client.options("/test/pages/") for _ in range(3)]

    # Neither refused (the quota is 0) nor counted: not even a per-minute rate slot.
    assert [r.status_code for r in responses] == [200] * 3
    assert "RateLimit" not in responses[0]
    assert not UsageEvent.objects.exists()
    assert not UsageCounter.objects.exists()
    assert not RateCounter.objects.exists()
    # The same view is metered for other methods.
    assert_refused(post(client, "/test/pages/"), 429, "rate_limited")


# DRF: MeteredMixin


@pytest.fixture
def drf_client(customer_token):
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {customer_token}")
    return client


def test_drf_meters_per_method(customer, drf_client):
    subscribe(customer, quotas={"seo": 5})

    read = drf_client.get("/test/reports/")
    assert read.status_code == 200
    assert "RateLimit" not in read
    assert UsageEvent.objects.count() == 0

    write = drf_client.post("/test/reports/", {}, format="json")
    assert write.status_code == 200
    assert ratelimit_field(write["RateLimit"])["r"] == "4"
    assert events_of(customer) == 1


def test_drf_viewsets_meter_per_action(customer, drf_client):
    subscribe(customer, quotas={"aeo": 1})

    assert drf_client.get("/test/report-set/").status_code == 200
    assert UsageEvent.objects.count() == 0
    assert drf_client.post("/test/report-set/", {}, format="json").status_code == 200
    assert events_of(customer, "aeo") == 1
    assert drf_client.post("/test/report-set/", {}, format="json").status_code == 429
    assert drf_client.get("/test/report-set/").status_code == 200


def test_drf_quantity_may_be_a_callable_of_the_request(customer, drf_client):
    subscribe(customer, quotas={"seo": 5})

    response = drf_client.post("/test/pages/", {"pages": 4}, format="json")

    assert response.status_code == 200, response.content
    assert used_now(customer) == 4
    assert drf_client.post("/test/pages/", {"pages": 2}, format="json").status_code == 429


@pytest.mark.parametrize(
    ("configured", "status", "error"),
    [(None, 429, "rate_limited"), (402, 402, "usage_limit_exceeded")],
)
def test_drf_refuses_over_quota_with_the_contract_body(
    settings, customer, drf_client, configured, status, error
):
    if configured is not None:
        settings.BILLING_QUOTA_EXCEEDED_STATUS = configured
    subscribe(customer, quotas={"seo": 1})
    assert drf_client.post("/test/reports/", {}, format="json").status_code == 200

    response = drf_client.post("/test/reports/", {}, format="json")

    assert response.status_code == status
    body = response.json()
    assert body == {
        "error": error,
        "message": body["message"],
        "primitive": "seo",
        "usage": {"current": 1, "limit": 1},
        "resetsAt": iso(window_now(customer).end),
    }
    assert int(response["Retry-After"]) >= 1
    assert events_of(customer) == 1


def test_drf_refuses_a_primitive_outside_the_kit(customer, drf_client):
    subscribe(customer, quotas={"seo": 5}, primitives=["aeo"])

    response = drf_client.post("/test/reports/", {}, format="json")

    assert_refused(response, 403, "primitive_not_allowed")
    assert UsageEvent.objects.count() == 0


def test_drf_rate_limit_answers_retry_after(rate_minute, customer, drf_client, rate_limited_kit):
    for _ in range(2):
        assert drf_client.post("/test/reports/", {}, format="json").status_code == 200

    response = drf_client.post("/test/reports/", {}, format="json")

    assert_refused(response, 429, "too_many_requests")
    assert 1 <= int(response["Retry-After"]) <= 60
    assert events_of(customer) == 2


@pytest.mark.parametrize(
    ("fail", "status"),
    [("status", 503), ("validation", 400), ("not_found", 404), ("exception", 500)],
)
def test_drf_a_failed_call_costs_nothing(customer, drf_client, fail, status):
    subscribe(customer, quotas={"seo": 1})

    response = drf_client.post("/test/reports/", {"fail": fail}, format="json")

    assert response.status_code == status
    assert UsageEvent.objects.count() == 0
    assert set(counters_of(customer).values()) <= {0}
    assert drf_client.post("/test/reports/", {}, format="json").status_code == 200


@pytest.mark.parametrize("header", ["X-Billing-Customer", "X-Billing-User"])
def test_drf_operator_key_acts_for_the_customer_it_names(operator_key, customer, header):
    subscribe(customer, quotas={"seo": 5})
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {operator_key}")

    assert client.post("/test/reports/", {}, format="json").status_code == 401
    response = client.post("/test/reports/", {}, format="json", headers={header: str(customer.pk)})
    assert response.status_code == 200
    assert events_of(customer) == 1


def test_drf_customer_token_may_not_name_another_customer(customer, drf_client):
    other = CustomerFactory()

    response = drf_client.post(
        "/test/reports/", {}, format="json", headers={"X-Billing-Customer": str(other.pk)}
    )

    assert response.status_code == 403
    assert UsageEvent.objects.count() == 0


# Entitlements: cached per process, versioned in the database


ENTITLEMENT_TABLES = {
    m._meta.db_table for m in (Plan, PlanQuota, Subscription, AccountKit, KitAssignment)
}


def test_the_entitlement_is_read_from_the_cache(customer, client):
    subscribe(customer, quotas={"seo": 5}, primitives=["seo"])
    assert post(client).status_code == 200

    with CaptureQueriesContext(connection) as queries:
        assert post(client).status_code == 200

    read = [q["sql"] for q in queries if any(t in q["sql"] for t in ENTITLEMENT_TABLES)]
    assert read == []


def _cached_and_stale(customer) -> bool:
    """The entitlement this process would start the next call from (its own copy, or the
    shared cache's) is at a version the database has moved past: only the reservation's
    version check can catch it."""
    cached = entitlements.entitlement_for(customer_id=customer.pk)
    return cached.version < entitlements.version_of(customer.pk)


@pytest.fixture(params=["process", "shared"])
def cached_in(request, settings):
    """Where the old entitlement is held: this process's LRU, or only a shared Django
    cache (the next call reaches a process that has not seen the customer yet)."""
    if request.param == "shared":
        settings.CACHES = {
            **settings.CACHES,
            "shared": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        }
        settings.BILLING_CACHE = "shared"
    return request.param


def _cancel(customer):
    subscriptions.subscription_set(customer=customer, plan_key="pro", status="canceled")


def _lower_quota(customer):
    catalog.plan_upsert(key="pro", name="Pro", quotas={"seo": 2})


def _kit_without_seo(customer):
    catalog.account_kit_upsert(key="pro-kit", name="Pro kit", primitives={"aeo": None})


def _change_plan(customer):
    subscriptions.subscription_set(customer=customer, plan_key="small")


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        pytest.param(_cancel, 402, "subscription_inactive", id="subscription_set-canceled"),
        pytest.param(_lower_quota, 429, "rate_limited", id="plan_upsert-lowers-quota"),
        pytest.param(
            _kit_without_seo, 403, "primitive_not_allowed", id="account_kit_upsert-drops-seo"
        ),
        pytest.param(_change_plan, 429, "rate_limited", id="plan-change-to-smaller-quota"),
    ],
)
def test_a_change_binds_the_very_next_call_without_touching_any_cache(
    cached_in, customer, client, change, status, error
):
    catalog.account_kit_upsert(key="pro-kit", name="Pro kit", primitives={"seo": None})
    catalog.plan_upsert(key="pro", name="Pro", account_kit_id="pro-kit", quotas={"seo": 5})
    catalog.plan_upsert(key="small", name="Small", account_kit_id="pro-kit", quotas={"seo": 2})
    subscriptions.subscription_set(customer=customer, plan_key="pro")
    assert [post(client).status_code for _ in range(2)] == [200, 200]
    if cached_in == "shared":
        entitlements.cache_clear()

    change(customer)

    assert _cached_and_stale(customer)
    assert_refused(post(client), status, error)
    assert events_of(customer) == 2


@pytest.mark.parametrize(
    ("change", "status"),
    [
        pytest.param(
            lambda customer: catalog.plan_upsert(key="pro", name="Pro", quotas={"seo": 5}),
            200,
            id="plan_upsert-raises-quota",
        ),
        pytest.param(
            lambda customer: catalog.plan_upsert(key="pro", name="Pro", quotas={}),
            200,
            id="plan_upsert-drops-quota",
        ),
        pytest.param(
            lambda customer: subscriptions.subscription_set(customer=customer, plan_key="big"),
            200,
            id="subscription_set-other-plan",
        ),
        pytest.param(
            lambda customer: customers.kit_assign(
                customer=customer, kit=AccountKit.objects.get(key="aeo-only")
            ),
            403,
            id="kit_assign-without-seo",
        ),
    ],
)
def test_a_change_is_seen_by_the_next_call_without_clearing_caches(
    customer, client, change, status
):
    catalog.plan_upsert(key="big", name="Big", quotas={"seo": 10})
    catalog.account_kit_upsert(key="aeo-only", name="AEO only", primitives={"aeo": None})
    subscribe(customer, quotas={"seo": 1}, plan_key="pro")
    assert post(client).status_code == 200
    assert post(client).status_code == 429  # the entitlement is now cached

    change(customer)

    assert post(client).status_code == status


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda customer: customers.kit_assign(
                customer=customer, kit=AccountKit.objects.get(key="seo-kit")
            ),
            id="kit_assign-other-kit",
        ),
        pytest.param(
            lambda customer: customers.kit_assign(customer=customer, kit=None), id="kit_assign-none"
        ),
        pytest.param(
            lambda customer: catalog.account_kit_upsert(
                key="aeo-only", name="AEO only", primitives={"aeo": None, "seo": None}
            ),
            id="account_kit_upsert-adds-seo",
        ),
    ],
)
def test_a_kit_change_is_seen_by_the_next_call(customer, client, change):
    catalog.account_kit_upsert(key="seo-kit", name="SEO", primitives={"seo": None})
    kit, _ = catalog.account_kit_upsert(key="aeo-only", name="AEO only", primitives={"aeo": None})
    customers.kit_assign(customer=customer, kit=kit)
    assert post(client).status_code == 403  # the entitlement is now cached

    change(customer)

    assert post(client).status_code == 200


# A shared cache that fails is only slower


@pytest.fixture
def broken_cache(settings, caplog):
    settings.CACHES = {
        **settings.CACHES,
        "broken": {"BACKEND": "tests.utils.FailingCache"},
    }
    settings.BILLING_CACHE = "broken"
    FailingCache.calls = 0
    yield
    assert FailingCache.calls > 0  # the app did reach for it
    warnings = [r.getMessage() for r in caplog.get_records("call")]
    assert any("Entitlement cache unavailable" in w for w in warnings)


def test_a_failing_cache_leaves_metered_calls_exact(broken_cache, customer, client, drf_client):
    subscribe(customer, quotas={"seo": 4})

    statuses = [post(client).status_code for _ in range(2)]
    statuses += [drf_client.post("/test/reports/", {}, format="json").status_code for _ in range(3)]

    assert statuses == [200, 200, 200, 200, 429]
    assert_refused(post(client), 429, "rate_limited")
    assert used_now(customer) == 4
    assert events_of(customer) == 4


def test_a_failing_cache_does_not_hide_a_change(broken_cache, customer, client):
    subscribe(customer, quotas={"seo": 1}, plan_key="pro")
    assert post(client).status_code == 200
    assert post(client).status_code == 429

    catalog.plan_upsert(key="pro", name="Pro", quotas={"seo": 3})

    assert [post(client).status_code for _ in range(3)] == [200, 200, 429]


def test_a_failing_cache_on_the_usage_api(broken_cache, api, customer):
    subscribe(customer, quotas={"seo": 3})
    url = f"/v1/users/{customer.pk}/billing/usage"

    statuses = [api.post(url, {"primitive": "seo"}, format="json").status_code for _ in range(4)]
    batch = api.post(
        "/v1/usage/events",
        {"events": [{"userId": customer_id_json(customer.pk), "primitive": "seo"}]},
        format="json",
    )

    assert statuses == [201, 201, 201, 429]
    assert batch.status_code == 200
    assert batch.json()["results"][0]["status"] == "created"  # reported usage: overage
    assert used_now(customer) == 4


# Windows


@pytest.mark.parametrize("anchored", [False, True], ids=["calendar", "anchored"])
def test_a_new_window_starts_from_zero(settings, customer, client, anchored):
    now = timezone.now()
    if anchored:
        anchor = now - timedelta(days=3, hours=5)
        subscribe(customer, quotas={"seo": 2}, period="day", billing_cycle_anchor=anchor)
        current = window_for("day", now, anchor=anchor)
    else:
        # No subscription: calendar windows of the default period, and no quota.
        settings.BILLING_DEFAULT_PERIOD = "day"
        current = window_for("day", now)
    previous = window_for("day", current.start - timedelta(seconds=1), anchor=current.start)
    assert previous.end == current.start
    # The previous window has two units in it.
    for _ in range(2):
        metering.usage_reserve(
            customer_id=customer.pk,
            primitive="seo",
            at=previous.start + timedelta(minutes=1),
        )

    response = post(client)

    assert response.status_code == 200
    if anchored:
        assert ratelimit_field(response["RateLimit"])["r"] == "1"
    assert counters_of(customer) == {("seo", previous.start): 2, ("seo", current.start): 1}
    assert UsageCounter.objects.get(
        customer_id=customer.pk, window_start=current.start
    ).window_end == (current.end)
    assert (
        UsageEvent.objects.filter(customer_id=customer.pk, window_start=current.start).count() == 1
    )


def test_a_plan_without_quotas_still_counts_in_the_plan_period(customer, client):
    subscription = subscribe(customer, quotas={}, period="week")

    assert post(client).status_code == 200

    anchor = subscription.billing_cycle_anchor
    counter = UsageCounter.objects.get(customer_id=customer.pk)
    assert (counter.primitive, counter.window_start, counter.used) == ("seo", anchor, 1)
    assert counter.window_end == anchor + timedelta(weeks=1)


def test_a_refused_call_leaves_the_remaining_quota_as_it_was(customer, client):
    subscribe(customer, quotas={"seo": 2}, primitives=["seo"])
    assert post(client, AEO).status_code == 403

    response = post(client)

    assert re.fullmatch(r'"seo";r=1;t=\d+', response["RateLimit"])


def test_a_kit_rate_of_none_is_no_rate(rate_minute, customer, client):
    subscribe(customer, quotas={"seo": 50}, primitives=["seo"])
    assert KitPrimitive.objects.get(kit__key=f"test-{customer.pk}-kit").rate_per_minute is None

    assert [post(client).status_code for _ in range(20)] == [200] * 20
    assert not RateCounter.objects.exists()
