"""The operator API (``/v1/``): every endpoint's success and error paths, and its auth.

Errors must be 400/401/403/404/405/409 with the offending field named as the client sent it
(camelCase), never a 500, and must leave the database as it was.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from billing_app.conf import customer_is_user, customer_model
from billing_app.customers import services as customers
from billing_app.entitlements import entitlement_for
from billing_app.metering.services import usage_reserve
from billing_app.models import (
    AccountKit,
    BillingPeriod,
    KitAssignment,
    OperatorKey,
    Plan,
    PlanQuota,
    Subscription,
    TenantToken,
    UsageEvent,
)
from billing_app.subscriptions import services as subscriptions

from ..factories import AccountKitFactory, CustomerFactory, PlanFactory, UserFactory
from ..utils import (
    assert_field_error,
    customers_count,
    iso,
    json_id,
    kit_state,
    plan_state,
    subscription_state,
)

pytestmark = pytest.mark.django_db

TOO_BIG = 2**63  # beyond any integer column: must be refused, not overflow in the database
LONG_SLUG = "a" * 65  # a valid slug pattern, longer than a primitive column holds
# Ids no customer can have, whatever its key type: text, a 128-bit integer (past any
# integer column), a UUID with a non-hex digit, and well-formed keys of both kinds.
MALFORMED_IDS = ["abc", str(2**128 - 1), "12345678-1234-1234-1234-12345678901z", "-1", "1.5"]
UNKNOWN_IDS = ["999999", str(uuid.uuid4())]
# str.isdigit() accepts these (superscript two, Arabic-Indic one, three-four, NKo one);
# none is a kit's id.
NON_ASCII_DIGITS = ["\u00b2", "\u0661", "\u0663\u0664", "\u07c1"]


def everything() -> tuple:
    """What any operator endpoint may write, to prove a refusal wrote nothing."""
    return (
        plan_state(),
        kit_state(),
        customers_count(),
        list(Subscription.objects.order_by("pk").values()),
        list(BillingPeriod.objects.order_by("pk").values()),
        list(KitAssignment.objects.order_by("pk").values()),
        list(TenantToken.objects.order_by("pk").values_list("prefix", "revoked")),
        UsageEvent.objects.count(),
    )


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
    response = api.post(
        "/v1/plans", {**pro_body, "perSeat": ["seo"], "features": ["sso"]}, format="json"
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert {k: body[k] for k in pro_body} == pro_body
    assert body["perSeat"] == ["seo"]
    assert body["features"] == ["sso"]
    assert body["billingCadence"] == "P1M"
    assert body["billingInterval"] == "monthly"
    assert body["currency"] == "usd"
    assert body["active"] is True
    assert body["overage"] == {}
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


@pytest.mark.parametrize(
    ("cadence", "interval"),
    [
        ("P1D", None),
        ("P2W", None),
        ("P30D", None),
        ("P1M", "monthly"),
        ("P3M", "quarterly"),
        ("P1Y", "yearly"),
        ("P5Y", None),
    ],
)
def test_plan_accepts_a_billing_cadence_from_a_day_to_five_years(api, cadence, interval):
    response = api.post(
        "/v1/plans", {"key": "c", "name": "C", "billingCadence": cadence}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["billingCadence"] == cadence
    assert response.json()["billingInterval"] == interval
    assert Plan.objects.get(key="c").billing_cadence == cadence
    listed = {plan["key"]: plan for plan in api.get("/v1/plans").json()}
    assert listed["c"]["billingInterval"] == interval


@pytest.mark.parametrize(
    "cadence",
    ["P0.5M", "PT1H", "P0D", "P10000Y", "PT0.001S", "P", "P5Y1D", "", 1, None, ["P1M"], {}],
    ids=repr,
)
def test_plan_refuses_a_billing_cadence_out_of_bounds_and_changes_nothing(api, cadence):
    PlanFactory(key="pro", billing_cadence="P3M", limits={"seo": 10})
    before = plan_state()

    response = api.post(
        "/v1/plans",
        {"key": "pro", "name": "Changed", "billingCadence": cadence, "quotas": {}},
        format="json",
    )

    assert_field_error(response, "billingCadence")
    assert plan_state() == before


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


def test_plan_list_costs_the_same_queries_however_many_plans(api, kit):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api.get("/v1/plans").status_code == 200
        return len(captured)

    PlanFactory(account_kit=kit, limits={"seo": 1})
    few = queries()
    for _ in range(10):
        plan = PlanFactory(account_kit=AccountKitFactory(), limits={"seo": 1, "aeo": 2})
        plan.features.create(feature="sso")
    assert queries() == few


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"accountKitId": "no-such-kit"}, "accountKitId", id="unknown-kit-key"),
        pytest.param({"accountKitId": "999999"}, "accountKitId", id="unknown-kit-id"),
        pytest.param({"accountKitId": "k" * 65}, "accountKitId", id="kit-too-long"),
        pytest.param({"quotas": {"seo": -1}}, "quotas", id="negative-quota"),
        pytest.param({"quotas": {"seo": "lots"}}, "quotas", id="non-integer-quota"),
        pytest.param({"quotas": {"seo": TOO_BIG}}, "quotas", id="quota-overflow"),
        pytest.param({"quotas": {"Not A Slug": 1}}, "quotas", id="bad-primitive"),
        pytest.param({"quotas": {"-seo": 1}}, "quotas", id="primitive-leading-dash"),
        pytest.param({"quotas": {LONG_SLUG: 1}}, "quotas", id="primitive-too-long"),
        pytest.param({"quotas": ["seo"]}, "quotas", id="quotas-not-an-object"),
        pytest.param({"perSeat": ["aeo"]}, "perSeat", id="per-seat-without-quota"),
        pytest.param({"perSeat": ["Not A Slug"]}, "perSeat", id="per-seat-bad-primitive"),
        pytest.param({"perSeat": [LONG_SLUG]}, "perSeat", id="per-seat-too-long"),
        pytest.param({"perSeat": "seo"}, "perSeat", id="per-seat-not-a-list"),
        pytest.param({"perSeat": [None]}, "perSeat", id="per-seat-null"),
        pytest.param({"features": ["not a slug"]}, "features", id="feature-not-a-slug"),
        pytest.param({"features": [""]}, "features", id="feature-blank"),
        pytest.param({"features": ["f" * 65]}, "features", id="feature-too-long"),
        pytest.param({"features": "sso"}, "features", id="features-not-a-list"),
        pytest.param({"features": [{"sso": True}]}, "features", id="feature-an-object"),
        pytest.param({"features": ["sso"] * 1001}, "features", id="too-many-features"),
        pytest.param({"overage": {"aeo": "1"}}, "overage", id="overage-without-quota"),
        pytest.param({"overage": {"seo": "-1"}}, "overage", id="negative-overage"),
        pytest.param({"period": "fortnight"}, "period", id="unknown-period"),
        pytest.param({"billingCadence": "monthly"}, "billingCadence", id="malformed-cadence"),
        pytest.param({"billingCadence": "P" + "1" * 32}, "billingCadence", id="cadence-too-long"),
        pytest.param({"stripePriceId": "price_other"}, "stripePriceId", id="price-taken"),
        pytest.param({"stripePriceId": "p" * 256}, "stripePriceId", id="price-too-long"),
        pytest.param({"stripeMeterEvent": "m" * 101}, "stripeMeterEvent", id="meter-too-long"),
        pytest.param({"currency": "dollars"}, "currency", id="currency-too-long"),
        pytest.param({"currency": "u$d"}, "currency", id="currency-not-letters"),
        pytest.param({"currency": "€ur"}, "currency", id="currency-not-ascii"),
        pytest.param({"name": ""}, "name", id="blank-name"),
        pytest.param({"name": "n" * 201}, "name", id="name-too-long"),
        pytest.param({"key": "not a slug"}, "key", id="bad-key"),
        pytest.param({"key": "k" * 65}, "key", id="key-too-long"),
        pytest.param({"active": "perhaps"}, "active", id="bad-active"),
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

    response = api.post(
        "/v1/plans", {"key": "pro", "name": "Pro", "quotas": {"seo": 20}, **change}, format="json"
    )

    assert_field_error(response, field)
    assert plan_state() == before


@pytest.mark.parametrize("digits", NON_ASCII_DIGITS)
def test_plan_refuses_a_kit_id_of_non_ascii_digits(api, kit, digits):
    PlanFactory(key="pro", account_kit=kit)
    before = plan_state()

    response = api.post(
        "/v1/plans", {"key": "pro", "name": "Pro", "accountKitId": digits}, format="json"
    )

    assert_field_error(response, "accountKitId")
    assert plan_state() == before


def test_plan_refuses_the_fullwidth_digits_of_a_kit_id(api, kit):
    """int() reads fullwidth digits as the ASCII ones: the kit must not be found by them."""
    other = AccountKitFactory(key="kit-other")
    PlanFactory(key="pro", account_kit=kit)
    before = plan_state()
    fullwidth = "".join(chr(0xFF10 + int(digit)) for digit in str(other.pk))

    response = api.post(
        "/v1/plans", {"key": "pro", "name": "Pro", "accountKitId": fullwidth}, format="json"
    )

    assert_field_error(response, "accountKitId")
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
        pytest.param({"key": "k" * 65, "name": "K"}, "key", id="key-too-long"),
        pytest.param({"key": "kit-pro"}, "name", id="missing-name"),
        pytest.param({"key": "kit-pro", "name": ""}, "name", id="blank-name"),
        pytest.param({"key": "kit-pro", "name": "n" * 201}, "name", id="name-too-long"),
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


# Customers (the seeds' "users")


def test_user_create_answers_201_with_the_id_in_its_json_type(api):
    response = api.post("/v1/users", {"email": "ada@example.com"}, format="json")

    assert response.status_code == 201, response.content
    created = customer_model()._default_manager.get(email="ada@example.com")
    assert response.json() == {"id": json_id(created.pk), "email": "ada@example.com"}
    assert isinstance(response.json()["id"], int if customer_is_user() else str)


def test_the_id_answered_works_where_an_id_is_taken(api):
    PlanFactory(key="pro")
    customer_id = api.post("/v1/users", {"email": "ada@example.com"}, format="json").json()["id"]

    assert api.get(f"/v1/users/{customer_id}").json()["id"] == customer_id
    assert api.post(f"/v1/users/{customer_id}/tokens", format="json").status_code == 201
    subscription = api.put(
        f"/v1/users/{customer_id}/billing/subscription", {"planKey": "pro"}, format="json"
    ).json()
    assert subscription["customerId"] == customer_id
    usage = api.post(f"/v1/users/{customer_id}/billing/usage", {"primitive": "seo"}, format="json")
    assert usage.status_code == 201, usage.content
    # And in a batch, where the id travels in the body.
    batch = api.post(
        "/v1/usage/events",
        {"events": [{"userId": customer_id, "primitive": "seo"}]},
        format="json",
    )
    assert batch.json()["results"][0]["status"] == "created", batch.json()


@pytest.mark.skipif(not customer_is_user(), reason="users log in by email: one user per email")
def test_user_create_refuses_a_duplicate_email(api):
    UserFactory(email="ada@example.com")
    response = api.post("/v1/users", {"email": "ADA@example.com"}, format="json")
    assert_field_error(response, "email")
    assert customers_count() == 1


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email"},
        {"email": ""},
        {"email": None},
        {},
        # Valid in form but longer than any email column holds.
        {"email": f"{'a' * 60}@{'b' * 60}.{'c' * 60}.{'d' * 60}.example.com"},
    ],
    ids=["malformed", "blank", "null", "missing", "too-long"],
)
def test_user_create_refuses_a_bad_email(api, body):
    response = api.post("/v1/users", body, format="json")
    assert_field_error(response, "email")
    assert customers_count() == 0


def test_user_get(api, customer):
    response = api.get(f"/v1/users/{customer.pk}")
    assert response.status_code == 200
    assert response.json() == {"id": json_id(customer.pk), "email": customer.email}


@pytest.mark.parametrize("customer_id", MALFORMED_IDS + UNKNOWN_IDS)
def test_user_get_answers_404_for_an_unknown_id(api, customer, customer_id):
    response = api.get(f"/v1/users/{customer_id}")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert "detail" in response.json()


# Tenant tokens


def test_token_issue_answers_201_with_a_tenant_token(api, customer):
    response = api.post(f"/v1/users/{customer.pk}/tokens", format="json")

    assert response.status_code == 201, response.content
    token = response.json()["token"]
    assert token.startswith("tk_")
    stored = TenantToken.objects.get(customer=customer)
    assert stored.name == "api"
    assert stored.grantee is None
    assert TenantToken.objects.get_from_key(token) == stored
    assert response.json()["prefix"] == stored.prefix


def test_token_issue_takes_a_name_and_a_grantee(api, customer, user):
    response = api.post(
        f"/v1/users/{customer.pk}/tokens",
        {"name": "ci", "granteeId": str(user.pk)},
        format="json",
    )
    assert response.status_code == 201, response.content
    stored = TenantToken.objects.get(customer=customer)
    assert (stored.name, stored.grantee) == ("ci", user)


def test_issued_token_is_stored_only_as_a_hash(api, customer):
    token = api.post(f"/v1/users/{customer.pk}/tokens", format="json").json()["token"]

    stored = TenantToken.objects.filter(customer=customer).values().get()
    assert token not in [str(value) for value in stored.values()]
    secret = token.partition(".")[2]
    assert not any(secret in str(value) for value in stored.values())


def test_issued_token_authenticates_as_the_customer(api, customer):
    PlanFactory(key="pro")
    subscriptions.subscription_set(customer=customer, plan_key="pro")
    token = api.post(f"/v1/users/{customer.pk}/tokens", format="json").json()["token"]

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/billing/subscription").json()["plan"] == "pro"
    # Known (not 401) but a customer, so not allowed on the operator API.
    assert client.get("/v1/plans").status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x" * 51}, "name"),
        ({"granteeId": "g" * 256}, "granteeId"),
        ({"granteeId": "nobody"}, "granteeId"),
        ({"granteeId": str(uuid.uuid4())}, "granteeId"),
        ({"granteeId": "999999"}, "granteeId"),
    ],
)
def test_token_issue_refuses_bad_input(api, customer, body, field):
    response = api.post(f"/v1/users/{customer.pk}/tokens", body, format="json")
    assert_field_error(response, field)
    assert not TenantToken.objects.exists()


# Subscriptions


@pytest.fixture
def pro(kit):
    return PlanFactory(key="pro", account_kit=kit, limits={"seo": 1000, "aeo": 250})


@pytest.fixture
def basic():
    return PlanFactory(key="basic", account_kit=AccountKitFactory(key="kit-basic"))


@pytest.fixture
def period() -> tuple[datetime, datetime]:
    """A billing period around now, as an operator states one."""
    now = timezone.now().replace(microsecond=0)
    return now - timedelta(days=10), now + timedelta(days=20)


@pytest.fixture
def contract(period) -> dict:
    return {
        "planKey": "pro",
        "status": "active",
        "stripeCustomerId": "cus_123",
        "stripeSubscriptionId": "sub_1",
        "currentPeriodEnd": iso(period[1]),
        "assignKit": True,
    }


def subscription_url(customer_id) -> str:
    return f"/v1/users/{customer_id}/billing/subscription"


def test_subscription_put_sets_it_and_assigns_the_plan_kit(api, customer, pro, contract, period):
    response = api.put(
        subscription_url(customer.pk),
        {**contract, "currentPeriodStart": iso(period[0])},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    expected = {k: v for k, v in contract.items() if k != "assignKit"}
    assert {k: body[k] for k in expected} == expected
    subscription = Subscription.objects.get(customer=customer)
    assert body["id"] == subscription.pk
    assert body["customerId"] == json_id(customer.pk)
    assert body["currentPeriodStart"] == iso(period[0])
    assert body["cancelAtPeriodEnd"] is False
    assert body["seats"] == 1
    assert body["accountKitId"] == "kit-pro"
    assert subscription.plan == pro
    assert list(BillingPeriod.objects.values_list("start", "end", "source")) == [
        (*period, "operator")
    ]
    assert KitAssignment.objects.get(customer=customer).kit == pro.account_kit
    # GET answers the same.
    assert api.get(subscription_url(customer.pk)).json() == body


def test_the_contract_body_starts_a_subscription_now_until_the_stated_end(
    api, customer, pro, contract, period
):
    before = timezone.now()
    response = api.put(subscription_url(customer.pk), contract, format="json")

    assert response.status_code == 200, response.content
    subscription = Subscription.objects.get(customer=customer)
    assert before <= subscription.started_at <= timezone.now()
    assert subscription.billing_cycle_anchor == subscription.started_at
    assert list(BillingPeriod.objects.values_list("start", "end", "source")) == [
        (subscription.started_at, period[1], "operator")
    ]
    assert response.json()["currentPeriodEnd"] == iso(period[1])


def test_subscription_put_assigns_the_kit_by_default(api, customer, pro):
    response = api.put(subscription_url(customer.pk), {"planKey": "pro"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["accountKitId"] == "kit-pro"
    assert response.json()["status"] == "active"
    assert KitAssignment.objects.get(customer=customer).kit == pro.account_kit


def test_subscription_put_without_assign_kit_leaves_the_kit(api, customer, pro, contract):
    own_kit = AccountKitFactory(key="own-kit")
    customers.kit_assign(customer=customer, kit=own_kit)

    response = api.put(
        subscription_url(customer.pk), {**contract, "assignKit": False}, format="json"
    )

    assert response.status_code == 200, response.content
    assert api.get(subscription_url(customer.pk)).json()["accountKitId"] == "own-kit"
    assert KitAssignment.objects.get(customer=customer).kit == own_kit


def test_subscription_put_keeps_omitted_fields(api, customer, pro, basic, contract, period):
    api.put(
        subscription_url(customer.pk),
        {
            **contract,
            "currentPeriodStart": iso(period[0]),
            "cancelAtPeriodEnd": True,
            "seats": 3,
        },
        format="json",
    )

    response = api.put(
        subscription_url(customer.pk), {"planKey": "basic", "status": "past_due"}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["planKey"] == "basic"
    assert body["status"] == "past_due"
    assert body["accountKitId"] == "kit-basic"
    assert body["stripeCustomerId"] == "cus_123"
    assert body["stripeSubscriptionId"] == "sub_1"
    assert body["seats"] == 3
    # The plan changed now: the current period is the rest of the stated one.
    assert body["currentPeriodStart"] > iso(period[0])
    assert body["currentPeriodEnd"] == iso(period[1])
    assert body["cancelAtPeriodEnd"] is True
    assert Subscription.objects.count() == 1


def test_subscription_get_answers_404_when_there_is_none(api, customer):
    response = api.get(subscription_url(customer.pk))
    assert response.status_code == 404
    assert "detail" in response.json()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"planKey": "no-such-plan"}, "planKey", id="unknown-plan"),
        pytest.param({"planKey": "not a slug"}, "planKey", id="bad-plan-key"),
        pytest.param({"planKey": "p" * 65}, "planKey", id="plan-key-too-long"),
        pytest.param({"planKey": None}, "planKey", id="null-plan-key"),
        pytest.param({"status": "bogus"}, "status", id="unknown-status"),
        pytest.param({"currentPeriodEnd": "next tuesday"}, "currentPeriodEnd", id="bad-date"),
        pytest.param(
            {"currentPeriodEnd": "2026-13-45T00:00:00Z"}, "currentPeriodEnd", id="impossible-date"
        ),
        pytest.param(
            {"currentPeriodStart": "2999-08-01T00:00:00Z"},
            "currentPeriodEnd",
            id="ends-before-start",
        ),
        pytest.param({"billingCycleAnchor": "soon"}, "billingCycleAnchor", id="bad-anchor"),
        pytest.param({"cancelAtPeriodEnd": "perhaps"}, "cancelAtPeriodEnd", id="bad-boolean"),
        pytest.param({"stripeCustomerId": None}, "stripeCustomerId", id="null-customer"),
        pytest.param({"stripeCustomerId": "c" * 256}, "stripeCustomerId", id="customer-too-long"),
        pytest.param(
            {"stripeSubscriptionId": "s" * 256}, "stripeSubscriptionId", id="stripe-sub-too-long"
        ),
        pytest.param({"assignKit": "perhaps"}, "assignKit", id="bad-assign-kit"),
        pytest.param({"seats": 0}, "seats", id="no-seats"),
        pytest.param({"seats": -1}, "seats", id="negative-seats"),
        pytest.param({"seats": 2**31}, "seats", id="seats-past-the-column"),
        pytest.param({"seats": TOO_BIG}, "seats", id="seats-huge"),
        pytest.param({"seats": 1.5}, "seats", id="seats-fraction"),
        pytest.param({"seats": "many"}, "seats", id="seats-text"),
        pytest.param({"seats": True}, "seats", id="seats-boolean"),
    ],
)
def test_subscription_put_refuses_bad_input_and_changes_nothing(
    api, customer, pro, basic, contract, change, field
):
    subscriptions.subscription_set(
        customer=customer, plan_key="basic", status="trialing", stripe_customer_id="cus_old"
    )
    before = subscription_state(customer)

    response = api.put(subscription_url(customer.pk), {**contract, **change}, format="json")

    assert_field_error(response, field)
    assert subscription_state(customer) == before


def test_subscription_put_without_plan_key_is_refused(api, customer, pro):
    response = api.put(subscription_url(customer.pk), {"status": "active"}, format="json")
    assert_field_error(response, "planKey")
    assert not Subscription.objects.exists()
    assert not KitAssignment.objects.exists()


# Change of plan, cancellation and reactivation (operator-managed: no Stripe subscription)


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_change_plan_answers_post_only(api, customer, pro, basic, method):
    subscriptions.subscription_set(customer=customer, plan_key="basic")
    before = everything()

    response = getattr(api, method)(
        f"{subscription_url(customer.pk)}/change-plan", {"planKey": "pro"}, format="json"
    )

    assert response.status_code == 405
    assert everything() == before


def test_change_plan_moves_the_customer_to_another_plan(api, customer, pro, basic):
    subscriptions.subscription_set(customer=customer, plan_key="basic")

    response = api.post(
        f"{subscription_url(customer.pk)}/change-plan", {"planKey": "pro"}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["planKey"] == "pro"
    assert response.json()["accountKitId"] == "kit-pro"


def reactivate(api, customer):
    return api.post(f"{subscription_url(customer.pk)}/reactivate", format="json")


def test_reactivate_undoes_a_pending_cancel_at_period_end(api, customer, pro):
    subscriptions.subscription_set(customer=customer, plan_key="pro")
    cancel = api.post(f"{subscription_url(customer.pk)}/cancel", {"when": "end"}, format="json")
    assert cancel.status_code == 200, cancel.content
    assert api.get(subscription_url(customer.pk)).json()["cancelAtPeriodEnd"] is True

    response = reactivate(api, customer)

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["cancelAtPeriodEnd"], body["status"], body["endedAt"]) == (False, "active", None)
    # Past the period's end, the scheduler keeps it going instead of ending it.
    end = BillingPeriod.objects.get(customer=customer).end
    subscriptions.periods_advance(at=end + timedelta(hours=1))
    assert Subscription.objects.get(customer=customer).status == "active"


@pytest.mark.parametrize("situation", ["no-subscription", "nothing-pending", "canceled"])
def test_reactivate_answers_409_when_there_is_nothing_to_undo(api, customer, pro, situation):
    if situation != "no-subscription":
        subscriptions.subscription_set(customer=customer, plan_key="pro")
    if situation == "canceled":
        subscriptions.subscription_cancel_here(customer=customer, when="end")
        subscriptions.subscription_set(customer=customer, plan_key="pro", status="canceled")
    before = everything()

    response = reactivate(api, customer)

    assert response.status_code == 409, response.content
    assert "detail" in response.json()
    assert everything() == before


# Usage


def usage_url(customer_id) -> str:
    return f"/v1/users/{customer_id}/billing/usage"


def test_usage_of_a_customer_without_subscription(api, customer):
    response = api.get(usage_url(customer.pk))

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "plan",
        "subscriptionPlan",
        "status",
        "period",
        "quotas",
        "usage",
        "gauges",
        "periodStart",
        "periodEnd",
    }
    assert body["plan"] is None
    assert body["status"] is None
    assert body["quotas"] == {}
    assert body["usage"] == {}
    assert body["gauges"] == {}
    assert body["period"] == "month"
    window = entitlement_for(customer_id=customer.pk, fresh=True).window(timezone.now())
    assert datetime.fromisoformat(body["periodStart"]) == window.start
    assert datetime.fromisoformat(body["periodEnd"]) == window.end


def record_usage(customer, primitive, quantity, at):
    """Usage as metering writes it: an event and its counter, in the window of ``at``."""
    usage_reserve(
        customer_id=customer.pk, primitive=primitive, quantity=quantity, at=at, enforce=False
    )


def test_usage_counts_the_current_window_only(api, customer, pro):
    subscriptions.subscription_set(
        customer=customer, plan_key="pro", at=timezone.now() - timedelta(days=40)
    )
    window = entitlement_for(customer_id=customer.pk, fresh=True).window(timezone.now())
    previous = window.start - timedelta(seconds=1)
    record_usage(customer, "seo", 42, window.start)
    record_usage(customer, "aeo", 3, window.start)
    record_usage(customer, "seo", 900, previous)
    record_usage(CustomerFactory(), "aeo", 7, window.start)

    response = api.get(usage_url(customer.pk))

    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("plan", "status", "period", "quotas", "usage")} == {
        "plan": "pro",
        "status": "active",
        "period": "month",
        "quotas": {"seo": 1000, "aeo": 250},
        "usage": {"seo": 42, "aeo": 3},
    }
    assert datetime.fromisoformat(body["periodStart"]) == window.start
    assert datetime.fromisoformat(body["periodEnd"]) == window.end


def test_usage_costs_the_same_queries_however_many_counters(api, customer, pro):
    subscriptions.subscription_set(customer=customer, plan_key="pro")
    now = timezone.now()

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api.get(usage_url(customer.pk)).status_code == 200
        return len(captured)

    record_usage(customer, "seo", 1, now)
    few = queries()
    for i in range(30):
        record_usage(customer, f"p{i}", i + 1, now)
    assert queries() == few


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"primitive": LONG_SLUG}, "primitive"),
        ({"primitive": "Not A Slug"}, "primitive"),
        ({"primitive": "seo", "quantity": 0}, "quantity"),
        ({"primitive": "seo", "quantity": TOO_BIG}, "quantity"),
        ({"primitive": "seo", "idempotencyKey": "k" * 256}, "idempotencyKey"),
        ({"primitive": "seo", "idempotencyKey": "a\x00b"}, "idempotencyKey"),
        ({"primitive": "seo", "timestamp": "yesterday"}, "timestamp"),
    ],
)
def test_usage_post_refuses_bad_input_and_records_nothing(api, customer, body, field):
    response = api.post(usage_url(customer.pk), body, format="json")
    assert_field_error(response, field)
    assert not UsageEvent.objects.exists()


@pytest.mark.parametrize(
    ("query", "field"),
    [({"primitive": LONG_SLUG}, "primitive"), ({"primitive": "seo", "quantity": "0"}, "quantity")],
)
def test_check_refuses_bad_input(api, customer, query, field):
    assert_field_error(api.get(f"/v1/users/{customer.pk}/billing/check", query), field)


# Every path under /v1/users/<id>/: a malformed or unknown id is a 404, never a 500, and
# changes nothing (under both settings modules: integer and UUID keys).

CUSTOMER_PATHS = [
    ("get", "", None),
    ("post", "/tokens", {}),
    ("get", "/billing/subscription", None),
    ("put", "/billing/subscription", {"planKey": "pro"}),
    ("post", "/billing/subscription/change-plan", {"planKey": "pro"}),
    ("post", "/billing/subscription/cancel", {"when": "now"}),
    ("post", "/billing/subscription/reactivate", {}),
    ("get", "/billing/usage", None),
    ("post", "/billing/usage", {"primitive": "seo"}),
    ("get", "/billing/usage/records", None),
    ("get", "/billing/usage/records/current", None),
    ("get", "/billing/check?primitive=seo", None),
]


@pytest.mark.parametrize("customer_id", MALFORMED_IDS + UNKNOWN_IDS)
@pytest.mark.parametrize(("method", "suffix", "body"), CUSTOMER_PATHS)
def test_a_malformed_or_unknown_customer_id_answers_404(
    api, customer, pro, method, suffix, body, customer_id
):
    subscriptions.subscription_set(customer=customer, plan_key="pro")
    before = everything()

    response = getattr(api, method)(f"/v1/users/{customer_id}{suffix}", body, format="json")

    assert response.status_code == 404, response.content
    assert "detail" in response.json()
    assert everything() == before


# Malformed bodies


WRITES = [
    ("post", "/v1/plans"),
    ("post", "/v1/account-kits"),
    ("post", "/v1/users"),
    ("post", "/v1/users/{id}/tokens"),
    ("put", "/v1/users/{id}/billing/subscription"),
    ("post", "/v1/users/{id}/billing/subscription/change-plan"),
    ("post", "/v1/users/{id}/billing/subscription/cancel"),
    ("post", "/v1/users/{id}/billing/usage"),
    ("post", "/v1/usage/events"),
]


@pytest.mark.parametrize(("method", "path"), WRITES)
@pytest.mark.parametrize("payload", ['{"key": "pro",', "[]", '"text"', "null", "42"])
def test_malformed_json_answers_400(api, customer, pro, method, path, payload):
    subscriptions.subscription_set(customer=customer, plan_key="pro")
    before = everything()

    response = getattr(api, method)(
        path.format(id=customer.pk), payload, content_type="application/json"
    )

    assert response.status_code == 400, response.content
    assert isinstance(response.json(), dict)
    assert everything() == before


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
    ("post", "/v1/users/{id}/billing/subscription/change-plan"),
    ("post", "/v1/users/{id}/billing/subscription/cancel"),
    ("post", "/v1/users/{id}/billing/subscription/reactivate"),
    ("get", "/v1/users/{id}/billing/usage"),
    ("post", "/v1/users/{id}/billing/usage"),
    ("get", "/v1/users/{id}/billing/usage/records"),
    ("get", "/v1/users/{id}/billing/check"),
    ("post", "/v1/usage/events"),
    ("get", "/v1/licenses/check"),
    ("get", "/v1/subscriptions/1/seats"),
    ("put", "/v1/subscriptions/1/seats"),
]


def call(client, method, path, customer):
    return getattr(client, method)(path.format(id=customer.pk), {}, format="json")


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_no_credentials_answers_401_with_a_challenge(anonymous, customer, method, path):
    response = call(anonymous, method, path, customer)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_tenant_token_answers_403(customer_client, customer, method, path):
    assert call(customer_client, method, path, customer).status_code == 403


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_staff_session_without_the_permission_answers_403(anonymous, customer, method, path):
    anonymous.force_login(UserFactory(is_staff=True))
    assert call(anonymous, method, path, customer).status_code == 403


def test_staff_without_the_permission_can_neither_read_nor_change_plans_nor_mint_tokens(
    anonymous, customer
):
    PlanFactory(key="pro")
    anonymous.force_login(UserFactory(is_staff=True))
    before = everything()

    assert anonymous.get("/v1/plans").status_code == 403
    assert (
        anonymous.post("/v1/plans", {"key": "new", "name": "New"}, format="json").status_code == 403
    )
    assert anonymous.post(f"/v1/users/{customer.pk}/tokens", format="json").status_code == 403

    assert everything() == before


def operate_permission() -> Permission:
    return Permission.objects.get(content_type__app_label="billing_app", codename="operate")


@pytest.fixture(params=["user-permission", "group-permission", "superuser"])
def operator_session(request, anonymous):
    """A session of a user who may operate: by its own permission, its group's, or as
    superuser. Staff or not does not matter."""
    if request.param == "superuser":
        operator = UserFactory(is_superuser=True)
    else:
        operator = UserFactory()
        if request.param == "user-permission":
            operator.user_permissions.add(operate_permission())
        else:
            group = Group.objects.create(name="billing operators")
            group.permissions.add(operate_permission())
            operator.groups.add(group)
    anonymous.force_login(operator)
    return anonymous


def test_a_session_with_the_permission_operates(operator_session, customer):
    assert operator_session.get("/v1/plans").status_code == 200
    response = operator_session.post("/v1/plans", {"key": "new", "name": "New"}, format="json")
    assert response.status_code == 201, response.content
    response = operator_session.post(f"/v1/users/{customer.pk}/tokens", format="json")
    assert response.status_code == 201, response.content
    assert TenantToken.objects.filter(customer=customer).count() == 1


def test_a_tenant_token_of_a_privileged_user_is_still_refused(anonymous, customer):
    privileged = UserFactory(is_staff=True, is_superuser=True)
    privileged.user_permissions.add(operate_permission())
    # The token names the user as its grantee; when customers are users, also as customer.
    token_customer = privileged if customer_is_user() else customer
    key = customers.tenant_token_issue(customer=token_customer, grantee=privileged)[1]
    anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    before = everything()

    assert anonymous.get("/v1/plans").status_code == 403
    assert (
        anonymous.post("/v1/plans", {"key": "new", "name": "N"}, format="json").status_code == 403
    )
    assert anonymous.post(f"/v1/users/{customer.pk}/tokens", format="json").status_code == 403

    assert everything() == before


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer sk_garbage",
        "Bearer sk_abcdefgh.wrongsecret",
        "Bearer sk_",
        "Bearer tk_garbage",
        "Bearer sk_é",
        # A NUL no database column can hold (PostgreSQL refuses it outright).
        "Bearer sk_ab\x00cd.secret",
        "Bearer tk_\x00.secret",
        "Bearer sk_" + "a" * 10_000,
        "Bearer",
        "Basic dXNlcjpwYXNz",
    ],
)
def test_bad_credentials_answer_401(anonymous, authorization):
    anonymous.credentials(HTTP_AUTHORIZATION=authorization)
    response = anonymous.post("/v1/users", {"email": "new@example.com"}, format="json")
    assert response.status_code == 401
    assert customers_count() == 0


def test_a_real_prefix_with_a_wrong_secret_answers_401(anonymous, operator_key):
    anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {operator_key}x")
    assert anonymous.get("/v1/plans").status_code == 401


def test_revoked_operator_key_answers_401(api, operator_key):
    assert api.get("/v1/plans").status_code == 200
    customers.api_key_revoke(key=OperatorKey.objects.get_from_key(operator_key))
    assert api.get("/v1/plans").status_code == 401


def test_revoked_tenant_token_answers_401(customer_client, customer_token):
    customers.api_key_revoke(key=TenantToken.objects.get_from_key(customer_token))
    assert customer_client.get("/v1/plans").status_code == 401


# Schema and docs


def test_schema_is_an_openapi_document_with_the_operator_paths(api):
    response = api.get("/v1/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    for path in (
        "/v1/plans",
        "/v1/users/{user_id}/billing/subscription",
        "/v1/users/{user_id}/billing/subscription/reactivate",
        "/v1/subscriptions/{subscription_id}/seats",
        "/v1/licenses/check",
    ):
        assert path in schema["paths"], path
    assert "post" in schema["paths"]["/v1/plans"]
    change_plan = schema["paths"]["/v1/users/{user_id}/billing/subscription/change-plan"]
    assert set(change_plan) - {"parameters"} == {"post"}


def test_docs_page_renders(api):
    response = api.get("/v1/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
    assert b"/v1/schema/" in response.content
