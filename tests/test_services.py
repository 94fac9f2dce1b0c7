"""The write services, the in-process client that wraps them, and ``testutils.subscribe``."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from billing_app import selectors, services
from billing_app.client import billing
from billing_app.exceptions import InvalidInput, NotFound
from billing_app.models import (
    AccountKit,
    KitAssignment,
    OperatorKey,
    Plan,
    PlanQuota,
    Subscription,
    TenantToken,
    UsageCounter,
    UsageEvent,
)
from billing_app.periods import Window
from billing_app.testutils import subscribe

from .factories import AccountKitFactory, PlanFactory, SubscriptionFactory, UserFactory

pytestmark = pytest.mark.django_db

JAN_1 = datetime(2026, 1, 1, tzinfo=UTC)
FEB_1 = datetime(2026, 2, 1, tzinfo=UTC)


def error_fields(excinfo: pytest.ExceptionInfo[InvalidInput]) -> set[str]:
    return set(excinfo.value.detail)


def quotas_of(plan: Plan) -> dict[str, int]:
    return dict(PlanQuota.objects.filter(plan=plan).values_list("primitive", "limit"))


def record_usage(user, primitive: str, window: Window, quantity: int) -> UsageCounter:
    """A window's counter and the one event it counts, as metering leaves them."""
    UsageEvent.objects.create(
        user=user,
        primitive=primitive,
        quantity=quantity,
        occurred_at=window.start,
        window_start=window.start,
    )
    return UsageCounter.objects.create(
        user=user,
        primitive=primitive,
        window_start=window.start,
        window_end=window.end,
        used=quantity,
    )


def plans_snapshot() -> list[tuple]:
    return [
        (
            plan.key,
            plan.name,
            plan.account_kit_id,
            plan.stripe_price_id,
            plan.period,
            plan.billing_cadence,
            plan.currency,
            plan.active,
            quotas_of(plan),
        )
        for plan in Plan.objects.order_by("key")
    ]


# Account kits


def test_account_kit_upsert_creates_then_updates_by_key():
    kit, created = services.account_kit_upsert(
        key="kit-pro", name="Pro kit", primitives={"seo": None, "aeo": 60}
    )
    assert created
    assert dict(kit.primitives.values_list("primitive", "rate_per_minute")) == {
        "seo": None,
        "aeo": 60,
    }

    again, created = services.account_kit_upsert(
        key="kit-pro", name="Pro kit v2", primitives={"aeo": 30, "email.send": None}
    )
    assert not created
    assert again.pk == kit.pk
    again.refresh_from_db()
    assert again.name == "Pro kit v2"
    # The given set replaces the old one: seo is gone.
    assert dict(again.primitives.values_list("primitive", "rate_per_minute")) == {
        "aeo": 30,
        "email.send": None,
    }


def test_account_kit_upsert_without_primitives_keeps_them():
    kit = AccountKitFactory(key="kit-pro", allow={"seo": 10})
    services.account_kit_upsert(key="kit-pro", name="Renamed")
    kit.refresh_from_db()
    assert kit.name == "Renamed"
    assert list(kit.primitives.values_list("primitive", "rate_per_minute")) == [("seo", 10)]


def test_account_kit_upsert_with_empty_primitives_clears_them():
    kit = AccountKitFactory(key="kit-pro", allow={"seo": 10})
    services.account_kit_upsert(key="kit-pro", name="Kit", primitives={})
    assert not kit.primitives.exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"primitives": {"seo": -1}}, "primitives"),
        ({"primitives": {"seo": True}}, "primitives"),
        ({"primitives": {"seo": "10"}}, "primitives"),
        ({"primitives": {"Not A Slug": None}}, "primitives"),
        ({"key": "not a slug"}, "key"),
        ({"name": ""}, "name"),
    ],
)
def test_account_kit_upsert_refuses_bad_input_and_changes_nothing(fields, field):
    AccountKitFactory(key="kit-pro", name="Pro", allow={"seo": 10})
    arguments = {"key": "kit-pro", "name": "Changed", "primitives": {"aeo": None}} | fields

    with pytest.raises(InvalidInput) as excinfo:
        services.account_kit_upsert(**arguments)

    assert field in error_fields(excinfo)
    assert list(AccountKit.objects.values_list("key", "name")) == [("kit-pro", "Pro")]
    kit = AccountKit.objects.get()
    assert list(kit.primitives.values_list("primitive", "rate_per_minute")) == [("seo", 10)]


# Plans


def test_plan_upsert_creates_with_every_field():
    kit = AccountKitFactory(key="kit-pro")
    plan, created = services.plan_upsert(
        key="pro",
        name="Pro",
        account_kit_id="kit-pro",
        stripe_price_id="price_123",
        quotas={"seo": 1000, "aeo": 250},
        period="week",
        billing_cadence="P1Y",
        currency="EUR",
        active=False,
    )
    assert created
    plan.refresh_from_db()
    assert plan.account_kit == kit
    assert plan.stripe_price_id == "price_123"
    assert quotas_of(plan) == {"seo": 1000, "aeo": 250}
    assert (plan.period, plan.billing_cadence, plan.currency, plan.active) == (
        "week",
        "P1Y",
        "eur",
        False,
    )


def test_plan_upsert_defaults_for_a_new_plan():
    plan, created = services.plan_upsert(key="free", name="Free")
    assert created
    plan.refresh_from_db()
    assert plan.account_kit is None
    assert (plan.stripe_price_id, plan.period, plan.billing_cadence, plan.currency) == (
        "",
        "month",
        "P1M",
        "usd",
    )
    assert plan.active
    assert quotas_of(plan) == {}


def test_plan_upsert_updates_by_key_and_unset_arguments_keep_their_value():
    kit = AccountKitFactory()
    services.plan_upsert(
        key="pro",
        name="Pro",
        account_kit_id=kit.pk,
        stripe_price_id="price_123",
        quotas={"seo": 1000},
        period="day",
        billing_cadence="P3M",
        currency="gbp",
        active=False,
    )

    plan, created = services.plan_upsert(key="pro", name="Pro 2")

    assert not created
    assert Plan.objects.count() == 1
    plan.refresh_from_db()
    assert plan.name == "Pro 2"
    assert plan.account_kit == kit
    assert plan.stripe_price_id == "price_123"
    assert quotas_of(plan) == {"seo": 1000}
    assert (plan.period, plan.billing_cadence, plan.currency, plan.active) == (
        "day",
        "P3M",
        "gbp",
        False,
    )


def test_plan_upsert_quotas_replace_the_whole_set():
    plan = PlanFactory(key="pro", limits={"seo": 10, "aeo": 5})
    services.plan_upsert(key="pro", name="Pro", quotas={"seo": 20, "email.send": 0})
    assert quotas_of(plan) == {"seo": 20, "email.send": 0}

    services.plan_upsert(key="pro", name="Pro", quotas={})
    assert quotas_of(plan) == {}


@pytest.mark.parametrize("ref", ["key", "pk"])
def test_plan_upsert_finds_the_kit_by_key_or_id(ref):
    kit = AccountKitFactory(key="kit-pro")
    plan, _ = services.plan_upsert(key="pro", name="Pro", account_kit_id=getattr(kit, ref))
    assert plan.account_kit == kit


@pytest.mark.parametrize("detach", [None, ""])
def test_plan_upsert_detaches_the_kit(detach):
    plan = PlanFactory(key="pro", account_kit=AccountKitFactory())
    services.plan_upsert(key="pro", name="Pro", account_kit_id=detach)
    plan.refresh_from_db()
    assert plan.account_kit is None


def test_plan_upsert_keeping_its_own_price_is_not_a_conflict():
    PlanFactory(key="pro", stripe_price_id="price_123")
    services.plan_upsert(key="pro", name="Pro", stripe_price_id="price_123")
    assert Plan.objects.get(key="pro").stripe_price_id == "price_123"


def test_plans_without_a_price_do_not_conflict():
    services.plan_upsert(key="a", name="A", stripe_price_id="")
    services.plan_upsert(key="b", name="B", stripe_price_id="")
    assert list(Plan.objects.values_list("stripe_price_id", flat=True)) == ["", ""]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"account_kit_id": "no-such-kit"}, "account_kit_id"),
        ({"account_kit_id": 999999}, "account_kit_id"),
        ({"quotas": {"seo": -1}}, "quotas"),
        ({"quotas": {"seo": 1.5}}, "quotas"),
        ({"quotas": {"seo": "10"}}, "quotas"),
        ({"quotas": {"seo": True}}, "quotas"),
        ({"quotas": {"SEO!": 1}}, "quotas"),
        ({"period": "fortnight"}, "period"),
        ({"billing_cadence": "1 month"}, "billing_cadence"),
        ({"billing_cadence": "P0D"}, "billing_cadence"),
        ({"currency": "us"}, "currency"),
        ({"currency": "u$d"}, "currency"),
        ({"stripe_price_id": "price_taken"}, "stripe_price_id"),
        ({"key": "not a slug"}, "key"),
        ({"name": ""}, "name"),
    ],
)
def test_plan_upsert_refuses_bad_input_and_changes_nothing(fields, field):
    PlanFactory(key="pro", name="Pro", limits={"seo": 10})
    PlanFactory(key="taken", name="Taken", stripe_price_id="price_taken")
    before = plans_snapshot()
    arguments = {"key": "pro", "name": "Changed", "quotas": {"seo": 99}} | fields

    with pytest.raises(InvalidInput) as excinfo:
        services.plan_upsert(**arguments)

    assert field in error_fields(excinfo)
    assert plans_snapshot() == before


# Tenants, tokens and keys


def test_tenant_create_makes_a_passwordless_user():
    user = services.tenant_create(email="ada@example.com")
    user.refresh_from_db()
    assert user.email == "ada@example.com"
    assert user.get_username() == "ada@example.com"
    assert not user.has_usable_password()


@pytest.mark.parametrize("email", ["not-an-email", "", "ada@", "@example.com"])
def test_tenant_create_refuses_a_malformed_email(email):
    with pytest.raises(InvalidInput) as excinfo:
        services.tenant_create(email=email)
    assert error_fields(excinfo) == {"email"}
    assert not get_user_model().objects.exists()


def test_tenant_create_refuses_an_existing_email_whatever_its_case():
    services.tenant_create(email="ada@example.com")
    with pytest.raises(InvalidInput) as excinfo:
        services.tenant_create(email="ADA@Example.com")
    assert error_fields(excinfo) == {"email"}
    assert get_user_model().objects.count() == 1


def test_tenant_create_refuses_an_email_too_long_to_store():
    # A valid address (labels of 63 characters) longer than the username column (150).
    email = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + ".com"
    with pytest.raises(InvalidInput) as excinfo:
        services.tenant_create(email=email)
    assert error_fields(excinfo) == {"email"}
    assert not get_user_model().objects.exists()


def test_tenant_token_issue_returns_a_tk_key_stored_only_hashed(tenant):
    token, key = services.tenant_token_issue(user=tenant, name="backend")

    assert key.startswith("tk_")
    assert TenantToken.objects.get_from_key(key) == token
    assert token.user == tenant
    assert token.name == "backend"
    stored = TenantToken.objects.filter(pk=token.pk).values().get()
    assert all(key not in str(value) for value in stored.values())


def test_operator_key_create_returns_an_sk_key_stored_only_hashed():
    operator_key, key = services.operator_key_create(name="backend")

    assert key.startswith("sk_")
    assert OperatorKey.objects.get_from_key(key) == operator_key
    assert operator_key.name == "backend"
    stored = OperatorKey.objects.filter(pk=operator_key.pk).values().get()
    assert all(key not in str(value) for value in stored.values())


def test_operator_key_create_needs_a_name():
    with pytest.raises(InvalidInput) as excinfo:
        services.operator_key_create(name="")
    assert error_fields(excinfo) == {"name"}
    assert not OperatorKey.objects.exists()


def test_each_key_is_new():
    keys = {services.operator_key_create(name="k")[1] for _ in range(5)}
    assert len(keys) == 5


def test_a_tenant_token_is_not_an_operator_key(tenant_token):
    with pytest.raises(OperatorKey.DoesNotExist):
        OperatorKey.objects.get_from_key(tenant_token)
    # Not even with the operator scheme in front of it.
    with pytest.raises(OperatorKey.DoesNotExist):
        OperatorKey.objects.get_from_key("sk_" + tenant_token.removeprefix("tk_"))


def test_an_operator_key_is_not_a_tenant_token(operator_key):
    with pytest.raises(TenantToken.DoesNotExist):
        TenantToken.objects.get_from_key(operator_key)


@pytest.mark.parametrize(
    "forge",
    [
        lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"),  # wrong secret
        lambda key: key.partition(".")[0],  # no secret
        lambda key: "sk_unknown." + key.partition(".")[2],  # unknown prefix
        lambda key: "",
    ],
)
def test_a_forged_operator_key_does_not_authenticate(operator_key, forge):
    with pytest.raises(OperatorKey.DoesNotExist):
        OperatorKey.objects.get_from_key(forge(operator_key))


def test_an_expired_operator_key_does_not_authenticate():
    operator_key, key = services.operator_key_create(name="old")
    operator_key.expiry_date = timezone.now() - timedelta(minutes=1)
    operator_key.save()
    with pytest.raises(OperatorKey.DoesNotExist):
        OperatorKey.objects.get_from_key(key)


@pytest.mark.parametrize("kind", ["operator", "tenant"])
def test_a_revoked_key_no_longer_authenticates(kind, tenant):
    if kind == "operator":
        model, (record, key) = OperatorKey, services.operator_key_create(name="k")
    else:
        model, (record, key) = TenantToken, services.tenant_token_issue(user=tenant)
    other_record, other_key = services.operator_key_create(name="other")
    assert model.objects.get_from_key(key) == record

    services.api_key_revoke(key=record)

    record.refresh_from_db()
    assert record.revoked
    with pytest.raises(model.DoesNotExist):
        model.objects.get_from_key(key)
    # Only that key.
    assert OperatorKey.objects.get_from_key(other_key) == other_record


# Kits of tenants


def test_kit_assign_gives_replaces_and_removes_the_kit(tenant):
    first, second = AccountKitFactory(), AccountKitFactory()

    services.kit_assign(user=tenant, kit=first)
    assert selectors.kit_of(user=tenant) == first

    services.kit_assign(user=tenant, kit=second)
    assert selectors.kit_of(user=tenant) == second
    assert KitAssignment.objects.filter(user=tenant).count() == 1

    assert services.kit_assign(user=tenant, kit=None) is None
    assert selectors.kit_of(user=tenant) is None
    # Removing a kit the tenant does not have is fine.
    services.kit_assign(user=tenant, kit=None)
    assert not KitAssignment.objects.exists()


def test_kit_assign_touches_only_that_tenant(tenant):
    kit, other = AccountKitFactory(), UserFactory()
    services.kit_assign(user=other, kit=kit)
    services.kit_assign(user=tenant, kit=AccountKitFactory())
    services.kit_assign(user=tenant, kit=None)
    assert selectors.kit_of(user=other) == kit


# Subscriptions


@pytest.fixture
def kit_pro(db):
    return AccountKitFactory(key="kit-pro")


@pytest.fixture
def pro(kit_pro):
    return PlanFactory(key="pro", account_kit=kit_pro, limits={"seo": 1000})


@pytest.fixture
def free(db):
    return PlanFactory(key="free", account_kit=AccountKitFactory(key="kit-free"))


def test_subscription_set_creates_a_subscription_and_assigns_the_plan_kit(tenant, pro):
    subscription = services.subscription_set(
        user=tenant,
        plan_key="pro",
        status="trialing",
        stripe_customer_id="cus_1",
        stripe_subscription_id="sub_1",
        current_period_start=JAN_1,
        current_period_end=FEB_1,
        cancel_at_period_end=True,
    )

    subscription.refresh_from_db()
    assert subscription.user == tenant
    assert subscription.plan == pro
    assert subscription.status == "trialing"
    assert (subscription.stripe_customer_id, subscription.stripe_subscription_id) == (
        "cus_1",
        "sub_1",
    )
    assert (subscription.current_period_start, subscription.current_period_end) == (JAN_1, FEB_1)
    assert subscription.cancel_at_period_end
    assert selectors.kit_of(user=tenant) == pro.account_kit


def test_subscription_set_defaults_for_a_new_subscription(tenant, pro):
    before = timezone.now()
    subscription = services.subscription_set(user=tenant, plan_key="pro")
    assert subscription.status == "active"
    assert before <= subscription.status_changed_at <= timezone.now()
    assert subscription.current_period_start is None
    assert not subscription.cancel_at_period_end


def test_subscription_set_changes_the_plan_and_kit_of_an_existing_subscription(tenant, pro, free):
    services.subscription_set(user=tenant, plan_key="pro")
    services.subscription_set(user=tenant, plan_key="free")

    assert Subscription.objects.get(user=tenant).plan == free
    assert Subscription.objects.count() == 1
    assert selectors.kit_of(user=tenant) == free.account_kit


def test_subscription_set_unset_arguments_keep_their_value(tenant, pro, free):
    services.subscription_set(
        user=tenant,
        plan_key="pro",
        status="past_due",
        stripe_customer_id="cus_1",
        stripe_subscription_id="sub_1",
        current_period_start=JAN_1,
        current_period_end=FEB_1,
        cancel_at_period_end=True,
    )
    changed_at = Subscription.objects.get(user=tenant).status_changed_at

    services.subscription_set(user=tenant, plan_key="free")

    subscription = Subscription.objects.get(user=tenant)
    assert subscription.plan == free
    assert subscription.status == "past_due"
    assert subscription.status_changed_at == changed_at
    assert (subscription.stripe_customer_id, subscription.stripe_subscription_id) == (
        "cus_1",
        "sub_1",
    )
    assert (subscription.current_period_start, subscription.current_period_end) == (JAN_1, FEB_1)
    assert subscription.cancel_at_period_end


def test_subscription_set_none_clears_stripe_ids_and_period(tenant, pro):
    services.subscription_set(
        user=tenant,
        plan_key="pro",
        stripe_customer_id="cus_1",
        stripe_subscription_id="sub_1",
        current_period_start=JAN_1,
        current_period_end=FEB_1,
    )
    services.subscription_set(
        user=tenant,
        plan_key="pro",
        stripe_customer_id=None,
        stripe_subscription_id=None,
        current_period_start=None,
        current_period_end=None,
    )
    subscription = Subscription.objects.get(user=tenant)
    assert (subscription.stripe_customer_id, subscription.stripe_subscription_id) == ("", "")
    assert (subscription.current_period_start, subscription.current_period_end) == (None, None)


def test_status_changed_at_moves_only_when_the_status_changes(pro):
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    subscription = SubscriptionFactory(plan=pro, status="active", status_changed_at=long_ago)
    user = subscription.user

    services.subscription_set(user=user, plan_key="pro", status="active")
    services.subscription_set(user=user, plan_key="pro", stripe_customer_id="cus_1")
    subscription.refresh_from_db()
    assert subscription.status_changed_at == long_ago

    before = timezone.now()
    services.subscription_set(user=user, plan_key="pro", status="past_due")
    subscription.refresh_from_db()
    assert subscription.status == "past_due"
    assert before <= subscription.status_changed_at <= timezone.now()


def test_subscription_set_without_assign_kit_leaves_the_kit_alone(tenant, pro):
    own_kit = AccountKitFactory()
    services.kit_assign(user=tenant, kit=own_kit)

    services.subscription_set(user=tenant, plan_key="pro", assign_kit=False)

    assert Subscription.objects.get(user=tenant).plan == pro
    assert selectors.kit_of(user=tenant) == own_kit


def test_subscription_set_to_a_plan_without_kit_removes_the_kit(tenant):
    PlanFactory(key="open", account_kit=None)
    services.kit_assign(user=tenant, kit=AccountKitFactory())

    services.subscription_set(user=tenant, plan_key="open")

    assert selectors.kit_of(user=tenant) is None


def test_subscription_and_kit_change_in_one_transaction(tenant, pro, free, monkeypatch):
    services.subscription_set(user=tenant, plan_key="free", status="active")
    before = Subscription.objects.values().get(user=tenant)

    def failing_kit_assign(**kwargs):
        raise RuntimeError("kit assignment failed")

    monkeypatch.setattr(services, "kit_assign", failing_kit_assign)
    with pytest.raises(RuntimeError, match="kit assignment failed"):
        services.subscription_set(
            user=tenant, plan_key="pro", status="past_due", stripe_customer_id="cus_9"
        )

    assert Subscription.objects.values().get(user=tenant) == before
    assert selectors.kit_of(user=tenant) == free.account_kit


def test_a_new_subscription_is_not_kept_when_its_kit_fails(tenant, pro, monkeypatch):
    def failing_kit_assign(**kwargs):
        raise RuntimeError("kit assignment failed")

    monkeypatch.setattr(services, "kit_assign", failing_kit_assign)
    with pytest.raises(RuntimeError):
        services.subscription_set(user=tenant, plan_key="pro")

    assert not Subscription.objects.filter(user=tenant).exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"plan_key": "nope"}, "plan_key"),
        ({"status": "happy"}, "status"),
        ({"status": None}, "status"),
        ({"current_period_start": FEB_1, "current_period_end": JAN_1}, "current_period_end"),
        ({"current_period_start": JAN_1, "current_period_end": JAN_1}, "current_period_end"),
        # Only the end given: it is checked against the stored start.
        ({"current_period_end": JAN_1 - timedelta(days=1)}, "current_period_end"),
    ],
)
def test_subscription_set_refuses_bad_input_and_changes_nothing(tenant, pro, free, fields, field):
    services.subscription_set(
        user=tenant,
        plan_key="free",
        current_period_start=JAN_1,
        current_period_end=FEB_1,
    )
    before = Subscription.objects.values().get(user=tenant)
    arguments = {"plan_key": "pro", "status": "canceled", "stripe_customer_id": "cus_2"} | fields

    with pytest.raises(InvalidInput) as excinfo:
        services.subscription_set(user=tenant, **arguments)

    assert error_fields(excinfo) == {field}
    assert Subscription.objects.values().get(user=tenant) == before
    assert selectors.kit_of(user=tenant) == free.account_kit


def test_a_refused_first_subscription_creates_nothing(tenant, pro):
    with pytest.raises(InvalidInput):
        services.subscription_set(
            user=tenant, plan_key="pro", current_period_start=FEB_1, current_period_end=JAN_1
        )
    assert not Subscription.objects.exists()
    assert selectors.kit_of(user=tenant) is None


# The in-process client


def test_client_plans_upsert_creates_and_updates():
    plan = billing.plans.upsert(key="pro", name="Pro", quotas={"seo": 1000}, period="month")
    assert isinstance(plan, Plan)
    assert quotas_of(plan) == {"seo": 1000}

    again = billing.plans.upsert(key="pro", name="Pro", quotas={"seo": 5})
    assert again.pk == plan.pk
    assert quotas_of(plan) == {"seo": 5}
    assert [p.key for p in billing.plans.list()] == ["pro"]


def test_client_plans_upsert_refuses_what_the_service_refuses():
    with pytest.raises(InvalidInput):
        billing.plans.upsert(key="pro", name="Pro", quotas={"seo": -1})
    assert not Plan.objects.exists()


def test_client_set_subscription_and_usage(tenant):
    kit = billing.account_kits.upsert(key="kit-pro", name="Kit", primitives={"seo": None})
    billing.plans.upsert(
        key="pro", name="Pro", account_kit_id="kit-pro", quotas={"seo": 1000, "aeo": 250}
    )

    subscription = billing.for_user(tenant).set_subscription(plan_key="pro", status="active")

    assert subscription.plan.key == "pro"
    assert billing.for_user(tenant).subscription() == subscription
    assert selectors.kit_of(user=tenant) == kit

    window = selectors.quota_window(subscription=subscription, at=timezone.now())
    record_usage(tenant, "seo", window, 42)
    # The previous window does not count.
    record_usage(tenant, "aeo", Window(window.start - timedelta(days=40), window.start), 7)

    usage = billing.for_user(tenant).usage()

    assert usage.plan == "pro"
    assert usage.status == "active"
    assert usage.period == "month"
    assert usage.quotas == {"seo": 1000, "aeo": 250}
    assert usage.usage == {"seo": 42}
    assert (usage.period_start, usage.period_end) == (window.start, window.end)


def test_client_usage_of_a_tenant_without_subscription(tenant):
    usage = billing.for_user(tenant).usage()
    assert usage.plan is None
    assert usage.status is None
    assert usage.quotas == {}
    assert usage.period_start <= timezone.now() < usage.period_end


def test_client_for_user_accepts_an_id(tenant):
    PlanFactory(key="pro")
    billing.for_user(tenant.pk).set_subscription(plan_key="pro")
    assert Subscription.objects.get().user == tenant


@pytest.mark.parametrize("user_id", [999999, "abc"])
def test_client_for_an_unknown_user_raises_not_found(user_id):
    with pytest.raises(NotFound):
        billing.for_user(user_id)


def test_client_users_tokens_and_kits():
    user = billing.users.create(email="ada@example.com")
    key = billing.for_user(user).issue_token(name="cli")
    assert TenantToken.objects.get_from_key(key).user == user

    kit = AccountKitFactory(key="kit-x")
    billing.for_user(user).assign_kit("kit-x")
    assert selectors.kit_of(user=user) == kit
    billing.for_user(user).assign_kit(None)
    assert selectors.kit_of(user=user) is None


# testutils.subscribe


def test_subscribe_gives_quotas_and_a_kit_of_the_primitives(tenant):
    subscription = subscribe(tenant, quotas={"seo": 2}, primitives=["seo", "aeo"])

    assert subscription.status == "active"
    assert quotas_of(subscription.plan) == {"seo": 2}
    kit = selectors.kit_of(user=tenant)
    assert set(kit.primitives.values_list("primitive", flat=True)) == {"seo", "aeo"}
    assert subscription.plan.account_kit == kit


def test_subscribe_without_primitives_means_no_kit_gating(tenant):
    services.kit_assign(user=tenant, kit=AccountKitFactory())
    subscription = subscribe(tenant, quotas={"seo": 2})
    assert subscription.plan.account_kit is None
    assert selectors.kit_of(user=tenant) is None


def test_subscribe_passes_period_status_key_and_fields(tenant):
    subscription = subscribe(
        tenant,
        period="day",
        status="past_due",
        plan_key="custom",
        stripe_customer_id="cus_1",
        current_period_start=JAN_1,
    )
    subscription.refresh_from_db()
    assert subscription.plan.key == "custom"
    assert subscription.plan.period == "day"
    assert subscription.status == "past_due"
    assert subscription.stripe_customer_id == "cus_1"
    assert subscription.current_period_start == JAN_1


def test_subscribe_again_replaces_the_quotas(tenant):
    subscribe(tenant, quotas={"seo": 2, "aeo": 1})
    subscription = subscribe(tenant, quotas={"seo": 5})
    assert quotas_of(subscription.plan) == {"seo": 5}
    assert Subscription.objects.count() == 1


def test_subscribe_gives_each_user_their_own_plan():
    first, second = UserFactory(), UserFactory()
    subscribe(first, quotas={"seo": 1})
    subscribe(second, quotas={"seo": 9})
    assert quotas_of(Subscription.objects.get(user=first).plan) == {"seo": 1}
    assert quotas_of(Subscription.objects.get(user=second).plan) == {"seo": 9}
