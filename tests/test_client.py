"""The in-process client (``billing_app.client``) and ``testutils.subscribe``: thin
wrappers, so each test proves the wrapper reaches the service and answers what it says."""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing_app.client import billing
from billing_app.customers import selectors as customers_selectors
from billing_app.customers import services as customers
from billing_app.entitlements import entitlement_for
from billing_app.exceptions import InvalidInput, NotFound, QuotaExceeded
from billing_app.metering.services import usage_reserve
from billing_app.models import Plan, Subscription, TenantToken
from billing_app.subscriptions.services import seats_manage
from billing_app.testutils import subscribe

from .factories import AccountKitFactory, CustomerFactory, PlanFactory
from .utils import quotas_of

pytestmark = pytest.mark.django_db


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


def test_client_set_subscription_and_usage(customer):
    kit = billing.account_kits.upsert(key="kit-pro", name="Kit", primitives={"seo": None})
    billing.plans.upsert(
        key="pro", name="Pro", account_kit_id="kit-pro", quotas={"seo": 1000, "aeo": 250}
    )
    started = timezone.now() - timedelta(days=40)

    subscription = billing.for_customer(customer).set_subscription(
        plan_key="pro", status="active", at=started
    )

    assert subscription.plan.key == "pro"
    assert billing.for_customer(customer).subscription() == subscription
    assert customers_selectors.kit_of(customer=customer) == kit

    window = entitlement_for(customer_id=customer.pk, fresh=True).window(timezone.now())
    billing.for_customer(customer).record("seo", 42)
    # The previous window does not count.
    usage_reserve(
        customer_id=customer.pk,
        primitive="seo",
        quantity=7,
        at=window.start - timedelta(seconds=1),
        enforce=False,
    )

    usage = billing.for_customer(customer).usage()

    assert usage.plan == "pro"
    assert usage.status == "active"
    assert usage.period == "month"
    assert usage.quotas == {"seo": 1000, "aeo": 250}
    assert usage.usage == {"seo": 42}
    assert (usage.window.start, usage.window.end) == (window.start, window.end)


def test_client_usage_of_a_customer_without_subscription(customer):
    usage = billing.for_customer(customer).usage()
    assert usage.plan is None
    assert usage.status is None
    assert usage.quotas == {}
    assert usage.window.start <= timezone.now() < usage.window.end


def test_client_entitlement_and_features(customer):
    subscribe(customer, quotas={"seo": 3}, features=["sso"])
    assert billing.for_customer(customer).entitlement().limit("seo") == 3
    assert billing.for_customer(customer).has_feature("sso")
    assert not billing.for_customer(customer).has_feature("csv-export")


def test_client_for_customer_accepts_an_id(customer):
    PlanFactory(key="pro")
    billing.for_customer(customer.pk).set_subscription(plan_key="pro")
    billing.for_user(str(customer.pk)).set_subscription(plan_key="pro", seats=2)
    assert Subscription.objects.get().customer == customer
    assert Subscription.objects.get().seats == 2


@pytest.mark.parametrize("customer_id", [999999, "abc", "12345678-1234-1234-1234-12345678901z"])
def test_client_for_an_unknown_customer_raises_not_found(customer_id):
    with pytest.raises(NotFound):
        billing.for_customer(customer_id)


def test_client_customers_tokens_and_kits():
    customer = billing.customers.create(email="ada@example.com")
    key = billing.for_customer(customer).issue_token(name="cli")
    assert TenantToken.objects.get_from_key(key).customer == customer

    kit = AccountKitFactory(key="kit-x")
    billing.for_customer(customer).assign_kit("kit-x")
    assert customers_selectors.kit_of(customer=customer) == kit
    billing.for_customer(customer).assign_kit(None)
    assert customers_selectors.kit_of(customer=customer) is None


def test_client_license_check(customer, user):
    subscription = subscribe(
        customer, primitives=["seo"], features=["sso"], plan_key="team", seats=2
    )
    seats_manage(
        subscription_id=subscription.pk, operations=[{"type": "add", "grantee_id": user.pk}]
    )
    assert [c["capability"] for c in billing.license_check(user.pk)] == ["seo", "sso", "team"]


# testutils.subscribe


def test_subscribe_gives_quotas_and_a_kit_of_the_primitives(customer):
    subscription = subscribe(customer, quotas={"seo": 2}, primitives=["seo", "aeo"])

    assert subscription.status == "active"
    assert quotas_of(subscription.plan) == {"seo": 2}
    kit = customers_selectors.kit_of(customer=customer)
    assert set(kit.primitives.values_list("primitive", flat=True)) == {"seo", "aeo"}
    assert subscription.plan.account_kit == kit


def test_subscribe_gives_gauges(customer):
    subscribe(customer, quotas={"seo": 2}, gauges={"storage": 10})
    storage = billing.for_customer(customer).gauge("storage")

    assert storage.add(10).level == 10
    assert storage.state().limit == 10
    with pytest.raises(QuotaExceeded):
        storage.add(1)


def test_subscribe_without_primitives_means_no_kit_gating(customer):
    customers.kit_assign(customer=customer, kit=AccountKitFactory())
    subscription = subscribe(customer, quotas={"seo": 2})
    assert subscription.plan.account_kit is None
    assert customers_selectors.kit_of(customer=customer) is None


def test_subscribe_passes_period_status_key_features_and_fields(customer):
    subscription = subscribe(
        customer,
        period="day",
        status="past_due",
        plan_key="custom",
        features=["sso"],
        stripe_customer_id="cus_1",
        seats=3,
    )
    subscription.refresh_from_db()
    assert subscription.plan.key == "custom"
    assert subscription.plan.period == "day"
    assert list(subscription.plan.features.values_list("feature", flat=True)) == ["sso"]
    assert subscription.status == "past_due"
    assert subscription.stripe_customer_id == "cus_1"
    assert subscription.seats == 3


def test_subscribe_again_replaces_the_quotas(customer):
    subscribe(customer, quotas={"seo": 2, "aeo": 1})
    subscription = subscribe(customer, quotas={"seo": 5})
    assert quotas_of(subscription.plan) == {"seo": 5}
    assert Subscription.objects.count() == 1


def test_subscribe_gives_each_customer_their_own_plan():
    first, second = CustomerFactory(), CustomerFactory()
    subscribe(first, quotas={"seo": 1})
    subscribe(second, quotas={"seo": 9})
    assert quotas_of(Subscription.objects.get(customer=first).plan) == {"seo": 1}
    assert quotas_of(Subscription.objects.get(customer=second).plan) == {"seo": 9}


def test_the_client_grants_and_reads_credits(customer):
    from billing_app.catalog.services import plan_upsert
    from billing_app.client import billing

    plan_upsert(key="credits-plan", name="Credits", credit_costs={"seo": 1})
    billing.for_customer(customer).set_subscription(plan_key="credits-plan")

    billing.for_customer(customer).grant_credits(5, reason="trial credits")
    billing.for_customer(customer).record("seo", 2)

    state = billing.for_customer(customer).credits()
    assert state.balance == 3
    assert [grant.reason for grant in state.grants] == ["trial credits"]
