"""The operator API (``/v1/``): every endpoint's success and error paths, and its auth.

Errors must be 400/401/403/404 with the offending field named as the client sent it
(camelCase), never a 500, and must leave the database as it was.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from billing_app import selectors, services
from billing_app.exceptions import InvalidInput
from billing_app.models import (
    AccountKit,
    KitAssignment,
    OperatorKey,
    Plan,
    PlanQuota,
    Subscription,
    TenantToken,
)

from ..factories import AccountKitFactory, PlanFactory, SubscriptionFactory, UserFactory

pytestmark = pytest.mark.django_db

User = get_user_model()

TOO_BIG = 2**63  # beyond any integer column: must be refused, not overflow in the database
LONG_SLUG = "a" * 65  # a valid slug pattern, longer than a primitive column holds


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def assert_field_error(response, field: str, status: int = 400) -> None:
    assert response.status_code == status, response.content
    assert field in response.json(), response.json()


def plan_state() -> list[tuple]:
    """Everything a plan upsert may touch, to prove an error changed nothing."""
    plans = list(
        Plan.objects.order_by("key").values_list(
            "key",
            "name",
            "account_kit_id",
            "stripe_price_id",
            "period",
            "billing_cadence",
            "currency",
            "active",
            "updated_at",
        )
    )
    quotas = list(
        PlanQuota.objects.order_by("plan__key", "primitive").values_list(
            "plan__key", "primitive", "limit"
        )
    )
    return plans + quotas


def kit_state() -> list[tuple]:
    kits = list(AccountKit.objects.order_by("key").values_list("key", "name", "updated_at"))
    primitives = list(
        AccountKit.objects.order_by("key", "primitives__primitive").values_list(
            "key", "primitives__primitive", "primitives__rate_per_minute"
        )
    )
    return kits + primitives


def subscription_state(user) -> tuple:
    subscription = Subscription.objects.filter(user=user).values().first()
    kit = KitAssignment.objects.filter(user=user).values_list("kit_id", flat=True).first()
    return subscription, kit


# Plans


@pytest.fixture
def kit():
    return AccountKitFactory(key="kit-pro", allow={"seo": None, "aeo": 60})


@pytest.fixture
def pro_body(kit):
    return {
        "key": "pro",
        "name": "Pro",
        "accountKitId": kit.key,
        "stripePriceId": "price_123",
        "quotas": {"seo": 1000, "aeo": 250},
        "period": "month",
    }


def test_plan_create_answers_201_with_the_contract_shape(api, kit, pro_body):
    response = api.post("/v1/plans", pro_body, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert {k: body[k] for k in pro_body} == {**pro_body, "accountKitId": "kit-pro"}
    assert body["billingCadence"] == "P1M"
    assert body["currency"] == "usd"
    assert body["active"] is True
    plan = Plan.objects.get(key="pro")
    assert body["id"] == plan.pk
    assert plan.account_kit == kit
    assert dict(plan.quotas.values_list("primitive", "limit")) == {"seo": 1000, "aeo": 250}


@pytest.mark.parametrize("ref", ["id", "key"])
def test_plan_account_kit_is_accepted_by_id_or_key(api, kit, pro_body, ref):
    pro_body["accountKitId"] = str(kit.pk) if ref == "id" else kit.key

    response = api.post("/v1/plans", pro_body, format="json")

    assert response.status_code == 201, response.content
    assert Plan.objects.get(key="pro").account_kit == kit


def test_plan_post_with_an_existing_key_updates_it_and_replaces_its_quotas(api, kit, pro_body):
    assert api.post("/v1/plans", pro_body, format="json").status_code == 201

    response = api.post(
        "/v1/plans",
        {"key": "pro", "name": "Pro 2", "quotas": {"email.send": 5}, "period": "day"},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["name"] == "Pro 2"
    assert body["quotas"] == {"email.send": 5}  # seo and aeo are gone, not merged
    assert body["period"] == "day"
    # Fields left out keep their values.
    assert body["accountKitId"] == "kit-pro"
    assert body["stripePriceId"] == "price_123"
    assert Plan.objects.count() == 1
    assert list(PlanQuota.objects.values_list("primitive", "limit")) == [("email.send", 5)]


def test_plan_update_may_keep_its_own_stripe_price(api, pro_body):
    assert api.post("/v1/plans", pro_body, format="json").status_code == 201
    response = api.post("/v1/plans", {**pro_body, "name": "Renamed"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["stripePriceId"] == "price_123"


@pytest.mark.parametrize("cadence", ["P1M", "P3M", "P1Y", "P2W", "P30D"])
def test_plan_accepts_iso_8601_billing_cadences(api, cadence):
    response = api.post(
        "/v1/plans", {"key": "c", "name": "C", "billingCadence": cadence}, format="json"
    )
    assert response.status_code == 201, response.content
    assert Plan.objects.get(key="c").billing_cadence == cadence


def test_plan_list_shows_every_plan_with_its_kit_and_quotas(api, kit):
    PlanFactory(key="pro", account_kit=kit, stripe_price_id="price_1", limits={"seo": 10})
    PlanFactory(key="free", period="day")

    response = api.get("/v1/plans")

    assert response.status_code == 200
    plans = {plan["key"]: plan for plan in response.json()}
    assert [plan["key"] for plan in response.json()] == ["free", "pro"]
    assert plans["pro"]["accountKitId"] == "kit-pro"
    assert plans["pro"]["stripePriceId"] == "price_1"
    assert plans["pro"]["quotas"] == {"seo": 10}
    assert plans["free"]["accountKitId"] is None
    assert plans["free"]["quotas"] == {}
    assert plans["free"]["period"] == "day"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"accountKitId": "no-such-kit"}, "accountKitId", id="unknown-kit-key"),
        pytest.param({"accountKitId": "999999"}, "accountKitId", id="unknown-kit-id"),
        pytest.param({"quotas": {"seo": -1}}, "quotas", id="negative-quota"),
        pytest.param({"quotas": {"seo": "lots"}}, "quotas", id="non-integer-quota"),
        pytest.param({"quotas": {"seo": TOO_BIG}}, "quotas", id="quota-overflow"),
        pytest.param({"quotas": {"Not A Slug": 1}}, "quotas", id="bad-primitive"),
        pytest.param({"quotas": {"-seo": 1}}, "quotas", id="primitive-leading-dash"),
        pytest.param({"quotas": {LONG_SLUG: 1}}, "quotas", id="primitive-too-long"),
        pytest.param({"quotas": ["seo"]}, "quotas", id="quotas-not-an-object"),
        pytest.param({"period": "fortnight"}, "period", id="unknown-period"),
        pytest.param({"billingCadence": "monthly"}, "billingCadence", id="malformed-cadence"),
        pytest.param({"billingCadence": "P0D"}, "billingCadence", id="zero-cadence"),
        pytest.param({"stripePriceId": "price_other"}, "stripePriceId", id="price-taken"),
        pytest.param({"currency": "dollars"}, "currency", id="currency-too-long"),
        pytest.param({"currency": "u$d"}, "currency", id="currency-not-letters"),
        pytest.param({"name": ""}, "name", id="blank-name"),
        pytest.param({"key": "not a slug"}, "key", id="bad-key"),
    ],
)
def test_plan_post_refuses_bad_input_and_changes_nothing(api, kit, change, field):
    # The plan under update has quotas and a kit, so a partial write would show.
    PlanFactory(
        key="pro",
        account_kit=kit,
        stripe_price_id="price_pro",
        limits={"seo": 10},
        billing_cadence="P4W",
    )
    PlanFactory(key="other", stripe_price_id="price_other")
    before = plan_state()

    response = api.post("/v1/plans", {"key": "pro", "name": "Pro", **change}, format="json")

    assert_field_error(response, field)
    assert plan_state() == before


def test_plan_create_with_an_unknown_kit_creates_no_plan(api):
    response = api.post(
        "/v1/plans", {"key": "new", "name": "New", "accountKitId": "nope"}, format="json"
    )
    assert_field_error(response, "accountKitId")
    assert not Plan.objects.exists()


# Account kits


def test_account_kit_create_answers_201_with_its_primitives(api):
    body = {
        "key": "kit_pro",
        "name": "Pro kit",
        "primitives": {"seo": {"ratePerMinute": None}, "aeo": {}},
    }

    response = api.post("/v1/account-kits", body, format="json")

    assert response.status_code == 201, response.content
    answer = response.json()
    assert answer["key"] == "kit_pro"
    assert answer["name"] == "Pro kit"
    assert answer["primitives"] == {"seo": {"ratePerMinute": None}, "aeo": {"ratePerMinute": None}}
    kit = AccountKit.objects.get(key="kit_pro")
    assert answer["id"] == kit.pk
    assert sorted(kit.primitives.values_list("primitive", flat=True)) == ["aeo", "seo"]


def test_account_kit_post_with_an_existing_key_updates_it(api):
    AccountKitFactory(key="kit-pro", allow={"seo": None, "aeo": 60})

    response = api.post(
        "/v1/account-kits",
        {"key": "kit-pro", "name": "Renamed", "primitives": {"aeo": {"ratePerMinute": 30}}},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["name"] == "Renamed"
    assert response.json()["primitives"] == {"aeo": {"ratePerMinute": 30}}
    assert AccountKit.objects.count() == 1


def test_account_kit_update_without_primitives_keeps_them(api):
    AccountKitFactory(key="kit-pro", allow={"seo": 5})

    response = api.post("/v1/account-kits", {"key": "kit-pro", "name": "Renamed"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["primitives"] == {"seo": {"ratePerMinute": 5}}


def test_account_kit_list(api):
    AccountKitFactory(key="b-kit", allow={"seo": 60})
    AccountKitFactory(key="a-kit")

    response = api.get("/v1/account-kits")

    assert response.status_code == 200
    assert [(kit["key"], kit["primitives"]) for kit in response.json()] == [
        ("a-kit", {}),
        ("b-kit", {"seo": {"ratePerMinute": 60}}),
    ]


KIT = {"key": "kit-pro", "name": "K"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"key": "bad key", "name": "K"}, "key", id="bad-key"),
        pytest.param({"key": "kit-pro"}, "name", id="missing-name"),
        pytest.param({"key": "kit-pro", "name": ""}, "name", id="blank-name"),
        pytest.param(KIT | {"primitives": {"Bad!": {}}}, "primitives", id="bad-primitive"),
        pytest.param(KIT | {"primitives": {LONG_SLUG: {}}}, "primitives", id="primitive-too-long"),
        pytest.param(KIT | {"primitives": {"seo": 5}}, "primitives", id="options-not-an-object"),
        pytest.param(KIT | {"primitives": ["seo"]}, "primitives", id="primitives-not-an-object"),
        pytest.param(
            KIT | {"primitives": {"seo": {"ratePerMinute": -1}}}, "primitives", id="negative-rate"
        ),
        pytest.param(
            KIT | {"primitives": {"seo": {"ratePerMinute": TOO_BIG}}},
            "primitives",
            id="rate-overflow",
        ),
    ],
)
def test_account_kit_post_refuses_bad_input_and_changes_nothing(api, body, field):
    AccountKitFactory(key="kit-pro", allow={"seo": 60, "aeo": None})
    before = kit_state()

    response = api.post("/v1/account-kits", body, format="json")

    assert_field_error(response, field)
    assert kit_state() == before


# Tenants


def test_user_create_answers_201_with_id_and_email(api):
    response = api.post("/v1/users", {"email": "ada@example.com"}, format="json")

    assert response.status_code == 201, response.content
    user = User.objects.get(email="ada@example.com")
    assert response.json() == {"id": user.pk, "email": "ada@example.com"}
    assert not user.has_usable_password()


def test_user_create_refuses_a_duplicate_email(api):
    UserFactory(email="ada@example.com")
    response = api.post("/v1/users", {"email": "ADA@example.com"}, format="json")
    assert_field_error(response, "email")
    assert User.objects.count() == 1


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email"},
        {"email": ""},
        {"email": None},
        {},
        # Valid in form but longer than the user model's columns hold.
        {"email": f"{'a' * 60}@{'b' * 60}.{'c' * 60}.example.com"},
    ],
    ids=["malformed", "blank", "null", "missing", "too-long"],
)
def test_user_create_refuses_a_bad_email(api, body):
    response = api.post("/v1/users", body, format="json")
    assert_field_error(response, "email")
    assert not User.objects.exists()


def test_user_get(api, tenant):
    response = api.get(f"/v1/users/{tenant.pk}")
    assert response.status_code == 200
    assert response.json() == {"id": tenant.pk, "email": tenant.email}


@pytest.mark.parametrize("user_id", ["999999", "abc", str(2**70), "-1"])
def test_user_get_answers_404_for_an_unknown_id(api, user_id):
    response = api.get(f"/v1/users/{user_id}")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert "detail" in response.json()


# Tenant tokens


def test_token_issue_answers_201_with_a_tenant_token(api, tenant):
    response = api.post(f"/v1/users/{tenant.pk}/tokens", format="json")

    assert response.status_code == 201, response.content
    token = response.json()["token"]
    assert token.startswith("tk_")
    stored = TenantToken.objects.get(user=tenant)
    assert stored.name == "api"
    assert TenantToken.objects.get_from_key(token) == stored


def test_token_issue_takes_a_name(api, tenant):
    response = api.post(f"/v1/users/{tenant.pk}/tokens", {"name": "ci"}, format="json")
    assert response.status_code == 201, response.content
    assert TenantToken.objects.get(user=tenant).name == "ci"


def test_issued_token_is_stored_only_as_a_hash(api, tenant):
    token = api.post(f"/v1/users/{tenant.pk}/tokens", format="json").json()["token"]

    stored = TenantToken.objects.filter(user=tenant).values().get()
    assert token not in [str(value) for value in stored.values()]
    secret = token.partition(".")[2]
    assert not any(secret in str(value) for value in stored.values())


def test_issued_token_authenticates_as_the_tenant(api, tenant):
    token = api.post(f"/v1/users/{tenant.pk}/tokens", format="json").json()["token"]

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    # Known (not 401) but a tenant, so not allowed on the operator API.
    assert client.get("/v1/plans").status_code == 403


@pytest.mark.parametrize("user_id", ["999999", "abc"])
def test_token_issue_for_an_unknown_user_answers_404(api, user_id):
    response = api.post(f"/v1/users/{user_id}/tokens", format="json")
    assert response.status_code == 404
    assert not TenantToken.objects.exists()


def test_token_issue_refuses_a_too_long_name(api, tenant):
    response = api.post(f"/v1/users/{tenant.pk}/tokens", {"name": "x" * 51}, format="json")
    assert_field_error(response, "name")
    assert not TenantToken.objects.exists()


# Subscriptions


CONTRACT_SUBSCRIPTION = {
    "planKey": "pro",
    "status": "active",
    "stripeCustomerId": "cus_123",
    "stripeSubscriptionId": "sub_1",
    "currentPeriodEnd": "2026-07-13T00:00:00Z",
    "assignKit": True,
}


@pytest.fixture
def pro(kit):
    return PlanFactory(key="pro", account_kit=kit, limits={"seo": 1000, "aeo": 250})


@pytest.fixture
def basic():
    return PlanFactory(key="basic", account_kit=AccountKitFactory(key="kit-basic"))


def subscription_url(user_id) -> str:
    return f"/v1/users/{user_id}/billing/subscription"


def test_subscription_put_sets_it_and_assigns_the_plan_kit(api, tenant, pro):
    response = api.put(subscription_url(tenant.pk), CONTRACT_SUBSCRIPTION, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    expected = {k: v for k, v in CONTRACT_SUBSCRIPTION.items() if k != "assignKit"}
    assert {k: body[k] for k in expected} == expected
    assert body["currentPeriodStart"] is None
    assert body["cancelAtPeriodEnd"] is False
    assert body["accountKitId"] == "kit-pro"
    subscription = Subscription.objects.get(user=tenant)
    assert subscription.plan == pro
    assert subscription.current_period_end == datetime.fromisoformat("2026-07-13T00:00:00+00:00")
    assert KitAssignment.objects.get(user=tenant).kit == pro.account_kit
    # GET answers the same.
    assert api.get(subscription_url(tenant.pk)).json() == body


def test_subscription_put_assigns_the_kit_by_default(api, tenant, pro):
    response = api.put(subscription_url(tenant.pk), {"planKey": "pro"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["accountKitId"] == "kit-pro"
    assert response.json()["status"] == "active"
    assert KitAssignment.objects.get(user=tenant).kit == pro.account_kit


def test_subscription_put_without_assign_kit_leaves_the_kit(api, tenant, pro):
    own_kit = AccountKitFactory(key="own-kit")
    services.kit_assign(user=tenant, kit=own_kit)

    response = api.put(
        subscription_url(tenant.pk), {**CONTRACT_SUBSCRIPTION, "assignKit": False}, format="json"
    )

    assert response.status_code == 200, response.content
    assert api.get(subscription_url(tenant.pk)).json()["accountKitId"] == "own-kit"
    assert KitAssignment.objects.get(user=tenant).kit == own_kit


def test_subscription_put_keeps_omitted_fields(api, tenant, pro, basic):
    api.put(
        subscription_url(tenant.pk),
        {
            **CONTRACT_SUBSCRIPTION,
            "currentPeriodStart": "2026-06-13T00:00:00Z",
            "cancelAtPeriodEnd": True,
        },
        format="json",
    )

    response = api.put(
        subscription_url(tenant.pk), {"planKey": "basic", "status": "past_due"}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["planKey"] == "basic"
    assert body["status"] == "past_due"
    assert body["accountKitId"] == "kit-basic"
    assert body["stripeCustomerId"] == "cus_123"
    assert body["stripeSubscriptionId"] == "sub_1"
    assert body["currentPeriodStart"] == "2026-06-13T00:00:00Z"
    assert body["currentPeriodEnd"] == "2026-07-13T00:00:00Z"
    assert body["cancelAtPeriodEnd"] is True
    assert Subscription.objects.count() == 1


def test_subscription_get_answers_404_when_there_is_none(api, tenant):
    response = api.get(subscription_url(tenant.pk))
    assert response.status_code == 404
    assert "detail" in response.json()


@pytest.mark.parametrize("method", ["get", "put"])
@pytest.mark.parametrize("user_id", ["999999", "abc"])
def test_subscription_of_an_unknown_user_answers_404(api, pro, method, user_id):
    response = getattr(api, method)(subscription_url(user_id), CONTRACT_SUBSCRIPTION, format="json")
    assert response.status_code == 404
    assert not Subscription.objects.exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"planKey": "no-such-plan"}, "planKey", id="unknown-plan"),
        pytest.param({"planKey": "not a slug"}, "planKey", id="bad-plan-key"),
        pytest.param({"planKey": None}, "planKey", id="null-plan-key"),
        pytest.param({"status": "bogus"}, "status", id="unknown-status"),
        pytest.param({"currentPeriodEnd": "next tuesday"}, "currentPeriodEnd", id="bad-date"),
        pytest.param(
            {"currentPeriodEnd": "2026-13-45T00:00:00Z"}, "currentPeriodEnd", id="impossible-date"
        ),
        pytest.param(
            {"currentPeriodStart": "2026-08-01T00:00:00Z"},
            "currentPeriodEnd",
            id="ends-before-start",
        ),
        pytest.param({"cancelAtPeriodEnd": "perhaps"}, "cancelAtPeriodEnd", id="bad-boolean"),
        pytest.param({"stripeCustomerId": None}, "stripeCustomerId", id="null-customer"),
        pytest.param({"assignKit": "perhaps"}, "assignKit", id="bad-assign-kit"),
    ],
)
def test_subscription_put_refuses_bad_input_and_changes_nothing(
    api, tenant, pro, basic, change, field
):
    services.subscription_set(
        user=tenant, plan_key="basic", status="trialing", stripe_customer_id="cus_old"
    )
    before = subscription_state(tenant)

    response = api.put(
        subscription_url(tenant.pk), {**CONTRACT_SUBSCRIPTION, **change}, format="json"
    )

    assert_field_error(response, field)
    assert subscription_state(tenant) == before


def test_subscription_put_without_plan_key_is_refused(api, tenant, pro):
    response = api.put(subscription_url(tenant.pk), {"status": "active"}, format="json")
    assert_field_error(response, "planKey")
    assert not Subscription.objects.exists()
    assert not KitAssignment.objects.exists()


# Usage


def usage_url(user_id) -> str:
    return f"/v1/users/{user_id}/billing/usage"


def test_usage_of_a_tenant_without_subscription(api, tenant):
    response = api.get(usage_url(tenant.pk))

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"plan", "status", "period", "quotas", "usage", "periodStart", "periodEnd"}
    assert body["plan"] is None
    assert body["status"] is None
    assert body["quotas"] == {}
    assert body["usage"] == {}
    assert body["period"] == "month"
    window = selectors.quota_window(subscription=None, at=timezone.now())
    assert parse_time(body["periodStart"]) == window.start
    assert parse_time(body["periodEnd"]) == window.end


def record_usage(user, primitive, quantity, window):
    """Usage as metering writes it: an event and its counter."""
    services.usage_reserve(
        user_id=user.pk,
        primitive=primitive,
        quantity=quantity,
        window=window,
        limit=None,
        occurred_at=window.start,
    )


def test_usage_counts_the_current_window_only(api, tenant, pro):
    subscription = SubscriptionFactory(
        user=tenant, plan=pro, current_period_start=timezone.now() - timedelta(days=40)
    )
    window = selectors.quota_window(subscription=subscription, at=timezone.now())
    previous = selectors.quota_window(
        subscription=subscription, at=window.start - timedelta(seconds=1)
    )

    def counter(primitive, used, window=window, user=tenant):
        record_usage(user, primitive, used, window)

    counter("seo", 42)
    counter("aeo", 3)
    counter("seo", 900, window=previous)
    counter("aeo", 7, user=UserFactory())

    response = api.get(usage_url(tenant.pk))

    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("plan", "status", "period", "quotas", "usage")} == {
        "plan": "pro",
        "status": "active",
        "period": "month",
        "quotas": {"seo": 1000, "aeo": 250},
        "usage": {"seo": 42, "aeo": 3},
    }
    assert parse_time(body["periodStart"]) == window.start
    assert parse_time(body["periodEnd"]) == window.end
    assert window.start != previous.start


def test_usage_costs_the_same_queries_however_many_counters(api, tenant, pro):
    subscription = SubscriptionFactory(user=tenant, plan=pro)
    window = selectors.quota_window(subscription=subscription, at=timezone.now())

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api.get(usage_url(tenant.pk)).status_code == 200
        return len(captured)

    record_usage(tenant, "seo", 1, window)
    few = queries()
    for i in range(30):
        record_usage(tenant, f"p{i}", i + 1, window)
    assert queries() == few


@pytest.mark.parametrize("user_id", ["999999", "abc"])
def test_usage_of_an_unknown_user_answers_404(api, user_id):
    assert api.get(usage_url(user_id)).status_code == 404


# Malformed bodies


WRITES = [
    ("post", "/v1/plans"),
    ("post", "/v1/account-kits"),
    ("post", "/v1/users"),
    ("post", "/v1/users/{id}/tokens"),
    ("put", "/v1/users/{id}/billing/subscription"),
]


@pytest.mark.parametrize(("method", "path"), WRITES)
@pytest.mark.parametrize("payload", ['{"key": "pro",', "[]", '"text"', "null", "42"])
def test_malformed_json_answers_400(api, tenant, method, path, payload):
    before = (plan_state(), kit_state(), User.objects.count(), TenantToken.objects.count())

    response = getattr(api, method)(
        path.format(id=tenant.pk), payload, content_type="application/json"
    )

    assert response.status_code == 400, response.content
    assert isinstance(response.json(), dict)
    after = (plan_state(), kit_state(), User.objects.count(), TenantToken.objects.count())
    assert after == before
    assert not Subscription.objects.exists()


# Authentication and permissions


ENDPOINTS = [
    ("get", "/v1/plans"),
    ("post", "/v1/plans"),
    ("get", "/v1/account-kits"),
    ("post", "/v1/account-kits"),
    ("post", "/v1/users"),
    ("get", "/v1/users/{id}"),
    ("post", "/v1/users/{id}/tokens"),
    ("get", "/v1/users/{id}/billing/subscription"),
    ("put", "/v1/users/{id}/billing/subscription"),
    ("get", "/v1/users/{id}/billing/usage"),
]


def call(client, method, path, user):
    return getattr(client, method)(path.format(id=user.pk), {}, format="json")


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_no_credentials_answers_401_with_a_challenge(anonymous, tenant, method, path):
    response = call(anonymous, method, path, tenant)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_tenant_token_answers_403(anonymous, tenant, tenant_token, method, path):
    anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_token}")
    assert call(anonymous, method, path, tenant).status_code == 403


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_non_staff_session_answers_403(anonymous, tenant, method, path):
    anonymous.force_login(tenant)
    assert call(anonymous, method, path, tenant).status_code == 403


def test_tenant_token_of_a_staff_user_is_still_refused(anonymous, tenant, tenant_token):
    tenant.is_staff = True
    tenant.save()
    anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_token}")
    response = anonymous.post("/v1/users", {"email": "new@example.com"}, format="json")
    assert response.status_code == 403
    assert not User.objects.filter(email="new@example.com").exists()


def test_staff_session_is_allowed(anonymous):
    anonymous.force_login(UserFactory(is_staff=True))
    assert anonymous.get("/v1/plans").status_code == 200
    response = anonymous.post("/v1/users", {"email": "new@example.com"}, format="json")
    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer sk_garbage",
        "Bearer sk_abcdefgh.wrongsecret",
        "Bearer sk_",
        "Bearer tk_garbage",
        "Bearer sk_é",
        "Bearer",
        "Basic dXNlcjpwYXNz",
    ],
)
def test_bad_credentials_answer_401(anonymous, authorization):
    anonymous.credentials(HTTP_AUTHORIZATION=authorization)
    response = anonymous.post("/v1/users", {"email": "new@example.com"}, format="json")
    assert response.status_code == 401
    assert not User.objects.exists()


def test_a_real_prefix_with_a_wrong_secret_answers_401(anonymous, operator_key):
    anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {operator_key}x")
    assert anonymous.get("/v1/plans").status_code == 401


def test_revoked_operator_key_answers_401(api, operator_key):
    assert api.get("/v1/plans").status_code == 200
    services.api_key_revoke(key=OperatorKey.objects.get_from_key(operator_key))
    assert api.get("/v1/plans").status_code == 401


def test_revoked_tenant_token_answers_401(anonymous, tenant_token):
    services.api_key_revoke(key=TenantToken.objects.get_from_key(tenant_token))
    anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_token}")
    assert anonymous.get("/v1/plans").status_code == 401


def test_operator_keys_start_with_sk_and_are_stored_only_hashed():
    stored, key = services.operator_key_create(name="ci")

    assert key.startswith("sk_")
    assert OperatorKey.objects.get_from_key(key) == stored
    row = OperatorKey.objects.filter(pk=stored.pk).values().get()
    secret = key.partition(".")[2]
    assert secret and not any(secret in str(value) for value in row.values())
    assert not any(key == str(value) for value in row.values())


def test_operator_key_needs_a_name():
    with pytest.raises(InvalidInput, match="name"):
        services.operator_key_create(name="")
    assert not OperatorKey.objects.exists()


# Schema and docs


def test_schema_is_an_openapi_document_with_the_operator_paths(api):
    response = api.get("/v1/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/v1/plans" in schema["paths"]
    assert "post" in schema["paths"]["/v1/plans"]
    assert "/v1/users/{user_id}/billing/subscription" in schema["paths"]


def test_docs_page_renders(api):
    response = api.get("/v1/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
    assert b"/v1/schema/" in response.content
