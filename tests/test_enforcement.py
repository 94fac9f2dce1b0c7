"""Metering and enforcement, through real requests: the demo views (``@metered`` behind
``QuotaMiddleware``), the test views in ``tests/views.py`` and the DRF ``MeteredMixin``.

Each rule of the metering issue has a test here that fails without it. The autouse ledger
check in ``conftest`` also proves, after every test, that counters equal their events.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone

from billing_app import selectors, services
from billing_app.exceptions import BillingImproperlyConfigured
from billing_app.models import (
    AccountKit,
    KitAssignment,
    Plan,
    PlanQuota,
    Subscription,
    UsageCounter,
    UsageEvent,
)
from billing_app.periods import window_for
from billing_app.testutils import subscribe

from .factories import UserFactory

pytestmark = pytest.mark.django_db

SEO = "/demo/seo/"
AEO = "/demo/aeo/"
INACTIVE = ["canceled", "unpaid", "incomplete", "incomplete_expired", "paused"]


# Helpers


def bearer(key: str, **headers: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {key}", **headers})


def post(client: Client, path: str = SEO, body: dict | None = None):
    return client.post(path, data=json.dumps(body or {}), content_type="application/json")


def events(user, primitive: str = "seo") -> int:
    return UsageEvent.objects.filter(user=user, primitive=primitive).count()


def counters(user) -> dict[tuple[str, datetime], int]:
    """Every counter row of ``user``: (primitive, window start) -> used."""
    rows = UsageCounter.objects.filter(user=user)
    return {(c.primitive, c.window_start): c.used for c in rows}


def used(user, primitive: str = "seo") -> int:
    """The usage of ``primitive`` in the current window, from the tenant's counter."""
    window = selectors.entitlement_for(user_id=user.pk).window(timezone.now())
    return services.usage_used(user_id=user.pk, primitive=primitive, window=window)


def iso(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def ratelimit_field(value: str) -> dict[str, str]:
    """``"seo";r=2;t=30`` -> {"name": "seo", "r": "2", "t": "30"}."""
    name, *params = value.split(";")
    return {"name": name.strip('"'), **dict(p.split("=", 1) for p in params)}


def month_window():
    return window_for("month", timezone.now())


def assert_refused(response, status: int, error: str, primitive: str = "seo") -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == error
    assert body["primitive"] == primitive
    assert isinstance(body["message"], str) and body["message"]
    return body


@pytest.fixture
def tenant_client(tenant_token) -> Client:
    return bearer(tenant_token)


@pytest.fixture
def rate_clock(monkeypatch):
    """Freeze django-ratelimit's clock so a minute boundary cannot fall inside a test;
    ``rate_clock.now += 60`` moves it on."""
    import django_ratelimit.core

    clock = SimpleNamespace(now=1_800_000_000.0)
    monkeypatch.setattr(django_ratelimit.core, "time", SimpleNamespace(time=lambda: clock.now))
    return clock


# Who is metered


def test_each_successful_call_records_one_event_and_raises_the_counter(tenant, tenant_client):
    subscribe(tenant, quotas={"seo": 3})
    window = month_window()

    for n in (1, 2, 3):
        response = post(tenant_client)

        assert response.status_code == 200, response.content
        assert response.json() == {"primitive": "seo", "ok": True}
        assert events(tenant) == n
        assert counters(tenant) == {("seo", window.start): n}
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

    event = UsageEvent.objects.filter(user=tenant).latest("pk")
    assert (event.quantity, event.window_start, event.idempotency_key) == (1, window.start, "")


def test_a_session_user_is_metered_as_the_tenant(tenant):
    subscribe(tenant, quotas={"seo": 3})
    client = Client()
    client.force_login(tenant)

    assert post(client).status_code == 200
    assert events(tenant) == 1


def test_an_operator_key_acts_for_the_tenant_named_in_x_billing_user(operator_key, tenant):
    subscribe(tenant, quotas={"seo": 1})
    bystander = UserFactory()
    client = bearer(operator_key, **{"X-Billing-User": str(tenant.pk)})

    assert post(client).status_code == 200
    assert events(tenant) == 1
    assert events(bystander) == 0
    # And it is the tenant's quota that runs out.
    assert post(client).status_code == 429
    assert events(tenant) == 1


@pytest.mark.parametrize(
    ("credentials", "status"),
    [
        pytest.param(lambda op, tk, user: {"Authorization": f"Bearer {op}"}, 401, id="operator"),
        pytest.param(
            lambda op, tk, user: {"Authorization": f"Bearer {tk}", "X-Billing-User": str(user.pk)},
            403,
            id="tenant-token-with-x-billing-user",
        ),
        pytest.param(lambda op, tk, user: {}, 401, id="anonymous"),
        pytest.param(lambda op, tk, user: {"Authorization": "Bearer tk_nope.nope"}, 401, id="bad"),
        pytest.param(
            lambda op, tk, user: {"Authorization": f"Bearer {op}", "X-Billing-User": "999999"},
            404,
            id="unknown-user",
        ),
        pytest.param(
            lambda op, tk, user: {"Authorization": f"Bearer {op}", "X-Billing-User": "nobody"},
            404,
            id="malformed-user",
        ),
    ],
)
def test_a_call_without_a_tenant_to_charge_is_refused(
    operator_key, tenant_token, tenant, credentials, status
):
    subscribe(tenant, quotas={"seo": 5})
    client = Client(headers=credentials(operator_key, tenant_token, tenant))

    response = post(client)

    assert response.status_code == status, response.content
    assert UsageEvent.objects.count() == 0
    assert UsageCounter.objects.count() == 0


# Over quota


@pytest.mark.parametrize(("configured", "status"), [(None, 429), (429, 429), (402, 402)])
def test_over_quota_is_refused_with_the_contract_body(
    settings, tenant, tenant_client, configured, status
):
    if configured is not None:
        settings.BILLING_QUOTA_EXCEEDED_STATUS = configured
    subscribe(tenant, quotas={"seo": 2})
    assert [post(tenant_client).status_code for _ in range(2)] == [200, 200]
    window = month_window()

    response = post(tenant_client)

    assert response.status_code == status
    body = response.json()
    assert body == {
        "error": "rate_limited",
        "message": body["message"],
        "primitive": "seo",
        "usage": {"current": 2, "limit": 2},
        "resetsAt": iso(window.end),
    }
    assert isinstance(body["message"], str) and body["message"]
    seconds_left = math.ceil((window.end - timezone.now()).total_seconds())
    assert abs(int(response["Retry-After"]) - seconds_left) <= 2
    # Nothing recorded for the refused call.
    assert events(tenant) == 2
    assert counters(tenant) == {("seo", window.start): 2}


def test_a_quota_of_zero_refuses_every_call(tenant, tenant_client):
    subscribe(tenant, quotas={"seo": 0})

    for _ in range(2):
        body = assert_refused(post(tenant_client), 429, "rate_limited")
        assert body["usage"] == {"current": 0, "limit": 0}
    assert events(tenant) == 0


def test_a_primitive_without_quota_is_unlimited_but_recorded(tenant, tenant_client):
    subscribe(tenant, quotas={"seo": 1})

    responses = [post(tenant_client, AEO) for _ in range(5)]

    assert [r.status_code for r in responses] == [200] * 5
    assert "RateLimit" not in responses[-1]
    assert events(tenant, "aeo") == 5
    assert used(tenant, "aeo") == 5


# Account Kits


def test_a_primitive_outside_the_kit_is_refused(tenant, tenant_client):
    subscribe(tenant, quotas={"seo": 5}, primitives=["seo"])

    response = post(tenant_client, AEO)

    body = assert_refused(response, 403, "primitive_not_allowed", primitive="aeo")
    assert set(body) == {"error", "message", "primitive"}
    assert UsageEvent.objects.count() == 0
    assert post(tenant_client, SEO).status_code == 200


@pytest.mark.parametrize("subscribed", [True, False], ids=["subscribed", "unsubscribed"])
def test_a_tenant_without_a_kit_is_not_gated(tenant, tenant_client, subscribed):
    if subscribed:
        subscribe(tenant, quotas={"seo": 5})
    assert not KitAssignment.objects.filter(user=tenant).exists()

    assert post(tenant_client, "/demo/email.send/").status_code == 200
    assert events(tenant, "email.send") == 1


@pytest.fixture
def rate_limited_kit(tenant):
    """A kit allowing seo at 2 calls a minute, and aeo without a rate."""
    kit, _ = services.account_kit_upsert(
        key="slow", name="Slow", primitives={"seo": 2, "aeo": None}
    )
    services.kit_assign(user=tenant, kit=kit)
    return kit


def test_the_kit_rate_limit_refuses_the_call_after_the_rate(
    rate_clock, tenant, tenant_client, rate_limited_kit
):
    assert [post(tenant_client).status_code for _ in range(2)] == [200, 200]

    response = post(tenant_client)

    assert_refused(response, 429, "rate_limited")
    assert 1 <= int(response["Retry-After"]) <= 60
    assert events(tenant) == 2
    # Another primitive and another tenant have their own count.
    assert post(tenant_client, AEO).status_code == 200
    other = UserFactory()
    services.kit_assign(user=other, kit=rate_limited_kit)
    assert post(bearer(services.tenant_token_issue(user=other)[1])).status_code == 200
    # The next minute admits calls again.
    rate_clock.now += 60
    assert post(tenant_client).status_code == 200
    assert events(tenant) == 3


# Subscriptions


@pytest.mark.parametrize("period", ["month", "day"])
def test_a_tenant_without_subscription_is_not_limited_but_recorded(
    settings, tenant, tenant_client, period
):
    settings.BILLING_DEFAULT_PERIOD = period

    responses = [post(tenant_client) for _ in range(5)]

    assert [r.status_code for r in responses] == [200] * 5
    assert "RateLimit" not in responses[-1]
    window = window_for(period, timezone.now())
    assert counters(tenant) == {("seo", window.start): 5}
    assert events(tenant) == 5


def _past_due_since(tenant, ago: timedelta) -> None:
    subscribe(tenant, quotas={"seo": 1}, status="past_due")
    Subscription.objects.filter(user=tenant).update(status_changed_at=timezone.now() - ago)
    selectors.entitlement_forget(user_id=tenant.pk)


@pytest.mark.parametrize(
    "arrange",
    [
        pytest.param(
            lambda user: subscribe(user, quotas={"seo": 1}, status="trialing"), id="trial"
        ),
        pytest.param(lambda user: subscribe(user, quotas={"seo": 1}, status="active"), id="active"),
        pytest.param(lambda user: _past_due_since(user, timedelta(days=2)), id="past-due-2-days"),
    ],
)
def test_usable_subscriptions_get_the_plan_quotas(tenant, tenant_client, arrange):
    arrange(tenant)

    assert post(tenant_client).status_code == 200
    body = assert_refused(post(tenant_client), 429, "rate_limited")
    assert body["usage"] == {"current": 1, "limit": 1}
    assert events(tenant) == 1


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
    settings, tenant, tenant_client, ago, grace, allowed
):
    if grace is not None:
        settings.BILLING_PAST_DUE_GRACE = grace
    _past_due_since(tenant, ago)

    response = post(tenant_client)

    if allowed:
        assert response.status_code == 200
        assert events(tenant) == 1
    else:
        assert_refused(response, 402, "subscription_inactive")
        assert events(tenant) == 0


@pytest.mark.parametrize("status", INACTIVE)
def test_inactive_subscriptions_are_refused(tenant, tenant_client, status):
    subscribe(tenant, quotas={"seo": 100}, status=status)

    response = post(tenant_client)

    body = assert_refused(response, 402, "subscription_inactive")
    assert set(body) == {"error", "message", "primitive"}
    assert UsageEvent.objects.count() == 0


@pytest.mark.parametrize("status", INACTIVE)
def test_inactive_subscriptions_get_the_fallback_plan_quotas(
    settings, tenant, tenant_client, status
):
    services.plan_upsert(key="free", name="Free", quotas={"seo": 1})
    settings.BILLING_FALLBACK_PLAN = "free"
    subscribe(tenant, quotas={"seo": 100}, status=status)

    first, second = post(tenant_client), post(tenant_client)

    assert first.status_code == 200
    assert ratelimit_field(first["RateLimit-Policy"])["q"] == "1"
    body = assert_refused(second, 429, "rate_limited")
    assert body["usage"] == {"current": 1, "limit": 1}
    assert events(tenant) == 1


# A failed call costs nothing


@pytest.mark.parametrize(
    ("fail", "status"),
    [
        pytest.param(lambda client: post(client, SEO, {"simulate": "error"}), 502, id="error"),
        pytest.param(lambda client: post(client, SEO, {"simulate": "exception"}), 500, id="raise"),
        pytest.param(lambda client: client.get(SEO), 405, id="wrong-method"),
    ],
)
def test_a_failed_call_costs_nothing(tenant, tenant_token, fail, status):
    subscribe(tenant, quotas={"seo": 2})
    client = bearer(tenant_token)
    client.raise_request_exception = False
    assert post(client).status_code == 200
    before = counters(tenant)

    response = fail(client)

    assert response.status_code == status
    assert events(tenant) == 1
    assert counters(tenant) == before
    # The refunded unit can be used: the quota of 2 still admits one more call.
    assert post(client).status_code == 200
    assert post(client).status_code == 429


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("query", "status"),
    [("", 500), ("?catch=1", 503), ("?atomic=0", 500)],
    ids=["raises", "answers-503", "outside-atomic"],
)
def test_a_database_error_in_the_view_is_refunded(tenant, tenant_token, query, status):
    subscribe(tenant, quotas={"seo": 1})
    client = bearer(tenant_token)
    client.raise_request_exception = False

    response = post(client, "/test/seo-db-error/" + query)

    assert response.status_code == status
    assert UsageEvent.objects.count() == 0
    assert set(counters(tenant).values()) <= {0}
    # The one unit of quota is still there.
    assert post(client).status_code == 200


def test_a_quantity_callable_of_the_request_is_reserved(tenant, tenant_client):
    subscribe(tenant, quotas={"seo": 5})

    assert post(tenant_client, "/test/seo-pages/", {"pages": 3}).status_code == 200
    assert list(UsageEvent.objects.values_list("quantity", flat=True)) == [3]
    assert used(tenant) == 3

    body = assert_refused(
        post(tenant_client, "/test/seo-pages/", {"pages": 3}), 429, "rate_limited"
    )
    assert body["usage"] == {"current": 3, "limit": 5}
    assert post(tenant_client, "/test/seo-pages/", {"pages": 2}).status_code == 200
    assert used(tenant) == 5


@pytest.mark.parametrize("pages", [0, -1, "3", None, True])
def test_a_bad_quantity_is_a_400_naming_quantity(tenant, tenant_client, pages):
    response = post(tenant_client, "/test/seo-pages/", {"pages": pages})

    assert response.status_code == 400
    assert "quantity" in response.json()
    assert UsageEvent.objects.count() == 0


def test_a_metered_view_without_the_middleware_fails_loudly(tenant, tenant_client):
    middleware = [m for m in django_settings.MIDDLEWARE if not m.endswith("QuotaMiddleware")]
    subscribe(tenant, quotas={"seo": 5})

    with override_settings(MIDDLEWARE=middleware), pytest.raises(BillingImproperlyConfigured):
        post(tenant_client)
    assert UsageEvent.objects.count() == 0


# DRF: MeteredMixin


@pytest.fixture
def drf_client(tenant_token):
    from rest_framework.test import APIClient

    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_token}")
    return client


def test_drf_meters_per_method(tenant, drf_client):
    subscribe(tenant, quotas={"seo": 5})

    read = drf_client.get("/test/reports/")
    assert read.status_code == 200
    assert "RateLimit" not in read
    assert UsageEvent.objects.count() == 0

    write = drf_client.post("/test/reports/", {}, format="json")
    assert write.status_code == 200
    assert ratelimit_field(write["RateLimit"])["r"] == "4"
    assert events(tenant) == 1


def test_drf_viewsets_meter_per_action(tenant, drf_client):
    subscribe(tenant, quotas={"aeo": 1})

    assert drf_client.get("/test/report-set/").status_code == 200
    assert UsageEvent.objects.count() == 0
    assert drf_client.post("/test/report-set/", {}, format="json").status_code == 200
    assert events(tenant, "aeo") == 1
    assert drf_client.post("/test/report-set/", {}, format="json").status_code == 429
    assert drf_client.get("/test/report-set/").status_code == 200


def test_drf_quantity_may_be_a_callable_of_the_request(tenant, drf_client):
    subscribe(tenant, quotas={"seo": 5})

    response = drf_client.post("/test/pages/", {"pages": 4}, format="json")

    assert response.status_code == 200, response.content
    assert used(tenant) == 4
    assert drf_client.post("/test/pages/", {"pages": 2}, format="json").status_code == 429


@pytest.mark.parametrize(("configured", "status"), [(None, 429), (402, 402)])
def test_drf_refuses_over_quota_with_the_contract_body(
    settings, tenant, drf_client, configured, status
):
    if configured is not None:
        settings.BILLING_QUOTA_EXCEEDED_STATUS = configured
    subscribe(tenant, quotas={"seo": 1})
    assert drf_client.post("/test/reports/", {}, format="json").status_code == 200

    response = drf_client.post("/test/reports/", {}, format="json")

    assert response.status_code == status
    body = response.json()
    assert body == {
        "error": "rate_limited",
        "message": body["message"],
        "primitive": "seo",
        "usage": {"current": 1, "limit": 1},
        "resetsAt": iso(month_window().end),
    }
    assert int(response["Retry-After"]) >= 1
    assert events(tenant) == 1


def test_drf_refuses_a_primitive_outside_the_kit(tenant, drf_client):
    subscribe(tenant, quotas={"seo": 5}, primitives=["aeo"])

    response = drf_client.post("/test/reports/", {}, format="json")

    assert_refused(response, 403, "primitive_not_allowed")
    assert UsageEvent.objects.count() == 0


def test_drf_rate_limit_answers_retry_after(rate_clock, tenant, drf_client, rate_limited_kit):
    for _ in range(2):
        assert drf_client.post("/test/reports/", {}, format="json").status_code == 200

    response = drf_client.post("/test/reports/", {}, format="json")

    assert_refused(response, 429, "rate_limited")
    assert 1 <= int(response["Retry-After"]) <= 60
    assert events(tenant) == 2


@pytest.mark.parametrize(
    ("fail", "status"), [("status", 503), ("validation", 400), ("exception", 500)]
)
def test_drf_a_failed_call_costs_nothing(tenant, drf_client, fail, status):
    subscribe(tenant, quotas={"seo": 1})

    response = drf_client.post("/test/reports/", {"fail": fail}, format="json")

    assert response.status_code == status
    assert UsageEvent.objects.count() == 0
    assert set(counters(tenant).values()) <= {0}
    assert drf_client.post("/test/reports/", {}, format="json").status_code == 200


def test_drf_operator_key_acts_for_x_billing_user(operator_key, tenant):
    from rest_framework.test import APIClient

    subscribe(tenant, quotas={"seo": 5})
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {operator_key}")

    assert client.post("/test/reports/", {}, format="json").status_code == 401
    response = client.post(
        "/test/reports/", {}, format="json", headers={"X-Billing-User": str(tenant.pk)}
    )
    assert response.status_code == 200
    assert events(tenant) == 1


def test_drf_tenant_token_may_not_name_another_tenant(tenant, drf_client):
    other = UserFactory()

    response = drf_client.post(
        "/test/reports/", {}, format="json", headers={"X-Billing-User": str(other.pk)}
    )

    assert response.status_code == 403
    assert UsageEvent.objects.count() == 0


# Entitlement cache


def test_the_entitlement_is_read_from_the_cache(tenant, tenant_client):
    subscribe(tenant, quotas={"seo": 5}, primitives=["seo"])
    assert post(tenant_client).status_code == 200
    tables = {m._meta.db_table for m in (Plan, PlanQuota, Subscription, AccountKit, KitAssignment)}

    with CaptureQueriesContext(connection) as queries:
        assert post(tenant_client).status_code == 200

    read = [q["sql"] for q in queries if any(t in q["sql"] for t in tables)]
    assert read == []


def _set_quota(limit: int):
    def change(user):
        quota = PlanQuota.objects.get(plan__key="pro", primitive="seo")
        quota.limit = limit
        quota.save()

    return change


@pytest.mark.parametrize(
    ("change", "status"),
    [
        pytest.param(
            lambda user: services.plan_upsert(key="pro", name="Pro", quotas={"seo": 5}),
            200,
            id="plan_upsert-raises-quota",
        ),
        pytest.param(_set_quota(5), 200, id="quota-save-raises-quota"),
        pytest.param(
            lambda user: PlanQuota.objects.get(plan__key="pro", primitive="seo").delete(),
            200,
            id="quota-delete-unlimits",
        ),
        pytest.param(
            lambda user: services.subscription_set(user=user, plan_key="big"),
            200,
            id="subscription_set-other-plan",
        ),
        pytest.param(
            lambda user: services.subscription_set(user=user, plan_key="pro", status="canceled"),
            402,
            id="subscription_set-canceled",
        ),
        pytest.param(
            lambda user: services.kit_assign(user=user, kit=AccountKit.objects.get(key="aeo-only")),
            403,
            id="kit_assign-without-seo",
        ),
    ],
)
def test_a_change_is_seen_by_the_next_call_without_clearing_caches(
    tenant, tenant_client, change, status
):
    services.plan_upsert(key="big", name="Big", quotas={"seo": 10})
    services.account_kit_upsert(key="aeo-only", name="AEO only", primitives={"aeo": None})
    subscribe(tenant, quotas={"seo": 1}, plan_key="pro")
    assert post(tenant_client).status_code == 200
    assert post(tenant_client).status_code == 429  # the entitlement is now cached

    change(tenant)

    assert post(tenant_client).status_code == status


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda user: services.kit_assign(user=user, kit=AccountKit.objects.get(key="seo-kit")),
            id="kit_assign-other-kit",
        ),
        pytest.param(lambda user: services.kit_assign(user=user, kit=None), id="kit_assign-none"),
        pytest.param(
            lambda user: services.account_kit_upsert(
                key="aeo-only", name="AEO only", primitives={"aeo": None, "seo": None}
            ),
            id="account_kit_upsert-adds-seo",
        ),
    ],
)
def test_a_kit_change_is_seen_by_the_next_call(tenant, tenant_client, change):
    services.account_kit_upsert(key="seo-kit", name="SEO", primitives={"seo": None})
    kit, _ = services.account_kit_upsert(key="aeo-only", name="AEO only", primitives={"aeo": None})
    services.kit_assign(user=tenant, kit=kit)
    assert post(tenant_client).status_code == 403  # the entitlement is now cached

    change(tenant)

    assert post(tenant_client).status_code == 200


# Windows


@pytest.mark.parametrize("anchored", [False, True], ids=["calendar", "anchored"])
def test_a_new_window_starts_from_zero(tenant, tenant_client, anchored):
    now = timezone.now()
    anchor = now - timedelta(days=3, hours=5) if anchored else None
    subscribe(tenant, quotas={"seo": 2}, period="day", current_period_start=anchor)
    current = window_for("day", now, anchor=anchor)
    previous = window_for("day", current.start - timedelta(seconds=1), anchor=anchor)
    assert previous.end == current.start
    # Yesterday's window is used up.
    for _ in range(2):
        services.usage_reserve(
            user_id=tenant.pk,
            primitive="seo",
            quantity=1,
            window=previous,
            limit=2,
            occurred_at=previous.start + timedelta(minutes=1),
        )

    response = post(tenant_client)

    assert response.status_code == 200
    assert ratelimit_field(response["RateLimit"])["r"] == "1"
    assert counters(tenant) == {("seo", previous.start): 2, ("seo", current.start): 1}
    assert UsageCounter.objects.get(user=tenant, window_start=current.start).window_end == (
        current.end
    )
    assert UsageEvent.objects.filter(user=tenant, window_start=current.start).count() == 1


def test_a_plan_without_quota_windows_still_counts_in_the_plan_period(tenant, tenant_client):
    subscribe(tenant, quotas={}, period="week")

    assert post(tenant_client).status_code == 200

    week = window_for("week", timezone.now())
    assert counters(tenant) == {("seo", week.start): 1}


def test_a_refused_call_leaves_the_remaining_quota_as_it_was(tenant, tenant_client):
    subscribe(tenant, quotas={"seo": 2}, primitives=["seo"])
    assert post(tenant_client, AEO).status_code == 403

    response = post(tenant_client)

    assert re.fullmatch(r'"seo";r=1;t=\d+', response["RateLimit"])
