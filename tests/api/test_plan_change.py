"""Operator plan changes and cancellation: records, carry or reset, Stripe first."""

from __future__ import annotations

import pytest

from billing_app import enforcement, selectors, services, stripe_sync
from billing_app.models import KitAssignment, Subscription, UsageRecord

from ..factories import AccountKitFactory, PlanFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def plans(db):
    basic = PlanFactory(
        key="basic",
        stripe_price_id="price_basic",
        account_kit=AccountKitFactory(key="kit_basic", allow={"seo": None}),
        limits={"seo": 10},
    )
    pro = PlanFactory(
        key="pro",
        stripe_price_id="price_pro",
        account_kit=AccountKitFactory(key="kit_pro", allow={"seo": None}),
        limits={"seo": 20},
    )
    return basic, pro


def change(api, user, plan_key):
    return api.post(
        f"/v1/users/{user.pk}/billing/subscription/change-plan",
        {"planKey": plan_key},
        format="json",
    )


def test_change_plan_records_the_old_part_and_opens_the_new(api, plans, tenant):
    services.subscription_set(user=tenant, plan_key="basic")
    enforcement.record(user=tenant, primitive="seo", quantity=3)

    response = change(api, tenant, "pro")

    assert response.status_code == 200
    assert response.json()["planKey"] == "pro"
    assert KitAssignment.objects.get(user=tenant).kit.key == "kit_pro"
    old, new = UsageRecord.objects.filter(user=tenant).order_by("cycle_start")
    assert (old.status, old.plan.key, old.usage["seo"]["used"]) == ("recorded", "basic", 3)
    assert (new.status, new.plan.key, new.cycle_start) == ("current", "pro", old.cycle_end)


def test_usage_carries_into_the_new_quotas_by_default(api, plans, tenant):
    services.subscription_set(user=tenant, plan_key="basic")
    enforcement.record(user=tenant, primitive="seo", quantity=7)

    change(api, tenant, "pro")

    assert selectors.usage_rollup(user=tenant).usage == {"seo": 7}
    check = enforcement.check(user=tenant, primitive="seo", quantity=14)
    assert check.allowed is False and check.remaining == 13


def test_usage_resets_when_configured(api, plans, tenant, settings):
    settings.BILLING_CHANGE_PLAN_USAGE = "reset"
    services.subscription_set(user=tenant, plan_key="basic")
    enforcement.record(user=tenant, primitive="seo", quantity=7)

    change(api, tenant, "pro")

    assert selectors.usage_rollup(user=tenant).usage == {}
    enforcement.record(user=tenant, primitive="seo", quantity=20)  # all of pro's quota
    assert enforcement.check(user=tenant, primitive="seo").allowed is False


def test_change_plan_of_a_stripe_subscription_goes_to_stripe_first(api, plans, tenant, stripe_stub):
    customer = stripe_stub.customer(metadata={"djstripe_subscriber": str(tenant.pk)})
    sub = stripe_stub.subscription(customer=customer["id"], price="price_basic")
    stripe_stub.price("price_pro")  # Stripe moves an item only to a price it has
    stripe_sync.subscription_sync(sub["id"], refresh=True)
    item_id = sub["items"]["data"][0]["id"]

    response = change(api, tenant, "pro")

    assert response.status_code == 200
    (modify,) = stripe_stub.calls("POST", f"/v1/subscriptions/{sub['id']}")
    assert modify.params == {"items": [{"id": item_id, "price": "price_pro"}]}
    assert Subscription.objects.get(user=tenant).plan.key == "pro"


@pytest.mark.parametrize(
    ("plan_key", "status", "field"),
    [("nope", 400, "planKey"), ("", 400, "planKey"), ("a" * 65, 400, "planKey")],
)
def test_change_plan_bad_input_changes_nothing(api, plans, tenant, plan_key, status, field):
    services.subscription_set(user=tenant, plan_key="basic")
    response = change(api, tenant, plan_key)
    assert response.status_code == status and field in response.json()
    assert Subscription.objects.get(user=tenant).plan.key == "basic"
    assert UsageRecord.objects.filter(user=tenant).count() == 1


def test_change_plan_to_a_plan_without_price_on_stripe_is_400(api, plans, tenant, stripe_stub):
    PlanFactory(key="internal")
    customer = stripe_stub.customer(metadata={"djstripe_subscriber": str(tenant.pk)})
    sub = stripe_stub.subscription(customer=customer["id"], price="price_basic")
    stripe_sync.subscription_sync(sub["id"], refresh=True)
    requests = len(stripe_stub.requests)

    response = change(api, tenant, "internal")

    assert response.status_code == 400 and "planKey" in response.json()
    assert len(stripe_stub.requests) == requests


def test_change_plan_without_subscription_is_409(api, plans, tenant):
    assert change(api, tenant, "pro").status_code == 409


def test_operator_cancel_now_finalizes(api, plans, tenant):
    services.subscription_set(user=tenant, plan_key="basic")
    path = f"/v1/users/{tenant.pk}/billing/subscription/cancel"

    response = api.post(path, {"when": "now"}, format="json")

    assert response.status_code == 200 and response.json()["success"] is True
    assert UsageRecord.objects.get(user=tenant).status == "final"
    assert api.post(path, {}, format="json").status_code == 409


def test_operator_cancel_at_end(api, plans, tenant):
    services.subscription_set(user=tenant, plan_key="basic")
    response = api.post(f"/v1/users/{tenant.pk}/billing/subscription/cancel", {}, format="json")
    assert response.status_code == 200
    assert Subscription.objects.get(user=tenant).cancel_at_period_end is True
    assert UsageRecord.objects.get(user=tenant).status == "current"


def test_plan_change_and_cancel_need_an_operator(anonymous, tenant_token, tenant, plans):
    anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_token}")
    base = f"/v1/users/{tenant.pk}/billing/subscription"
    assert anonymous.post(f"{base}/change-plan", {"planKey": "pro"}).status_code == 403
    assert anonymous.post(f"{base}/cancel", {}).status_code == 403
