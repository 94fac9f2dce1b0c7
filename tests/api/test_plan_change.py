"""Operator plan changes, cancellation and reactivation: periods split and recorded, usage
carried or reset, Stripe asked first for a Stripe-backed subscription."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

from billing_app.cycles.services import records_close
from billing_app.metering.selectors import usage_rollup
from billing_app.metering.services import usage_check, usage_record
from billing_app.models import BillingPeriod, KitAssignment, Problem, Subscription, UsageRecord
from billing_app.subscriptions import services as subscriptions

from ..factories import AccountKitFactory, PlanFactory
from ..utils import expected, refuse, state_of, subscribe_on_stripe

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


def base(customer):
    return f"/v1/users/{customer.pk}/billing/subscription"


def change(api, customer, plan_key):
    return api.post(f"{base(customer)}/change-plan", {"planKey": plan_key}, format="json")


def test_change_plan_splits_the_period_and_records_the_old_part(api, plans, customer, clock):
    clock.set("2026-03-01 00:00")
    subscriptions.subscription_set(customer=customer, plan_key="basic")
    usage_record(customer_id=customer.pk, primitive="seo", quantity=3)
    changed_at = clock.set("2026-03-10 12:00")

    response = change(api, customer, "pro")

    assert response.status_code == 200
    assert response.json()["planKey"] == "pro"
    assert KitAssignment.objects.get(customer=customer).kit.key == "kit_pro"
    old, new = BillingPeriod.objects.filter(customer=customer).order_by("start")
    assert (old.plan.key, old.end, old.end_reason) == ("basic", changed_at, "plan_change")
    assert (new.plan.key, new.start) == ("pro", changed_at)

    (record,) = records_close()  # the old part has ended: it is recorded, on its plan
    assert (record.period, record.plan.key, record.status) == (old, "basic", "recorded")
    assert record.usage["seo"]["used"] == 3
    assert not UsageRecord.objects.filter(period=new).exists()


def test_usage_carries_into_the_new_quotas_by_default(api, plans, customer):
    subscriptions.subscription_set(customer=customer, plan_key="basic")
    usage_record(customer_id=customer.pk, primitive="seo", quantity=7)

    change(api, customer, "pro")

    assert usage_rollup(customer_id=customer.pk).usage == {"seo": 7}
    check = usage_check(customer_id=customer.pk, primitive="seo", quantity=14)
    assert check.allowed is False and check.remaining == 13


def test_usage_resets_when_configured(api, plans, customer, settings, clock):
    settings.BILLING_CHANGE_PLAN_USAGE = "reset"
    subscriptions.subscription_set(customer=customer, plan_key="basic")
    usage_record(customer_id=customer.pk, primitive="seo", quantity=7)
    clock.set(clock.now + timedelta(seconds=1))

    change(api, customer, "pro")

    assert usage_rollup(customer_id=customer.pk).usage == {}
    usage_record(customer_id=customer.pk, primitive="seo", quantity=20)  # all of pro's quota
    assert usage_check(customer_id=customer.pk, primitive="seo").allowed is False


def test_change_plan_of_a_stripe_subscription_goes_to_stripe_first(
    api, plans, customer, stripe_stub
):
    stripe_stub.price("price_pro")  # Stripe moves an item only to a price it has
    _, sub = subscribe_on_stripe(stripe_stub, customer, price="price_basic")
    item_id = sub["items"]["data"][0]["id"]

    response = change(api, customer, "pro")

    assert response.status_code == 200
    (modify,) = stripe_stub.calls("POST", f"/v1/subscriptions/{sub['id']}")
    assert modify.params == {"items": [{"id": item_id, "price": "price_pro"}]}
    assert response.json()["planKey"] == "pro"
    assert state_of(customer) == expected(stripe_stub.objects[sub["id"]])


def test_change_plan_changes_the_item_on_our_plans_price(api, plans, customer, stripe_stub):
    """A subscription with another item (an add-on) besides the plan's: the plan's item
    is the one whose price changes."""
    stripe_stub.price("price_pro")  # Stripe moves an item only to a price it has
    _, sub = subscribe_on_stripe(stripe_stub, customer, price="price_basic")
    ours = sub["items"]["data"][0]
    addon = stripe_stub.make(
        "subscription_item",
        subscription=sub["id"],
        price=stripe_stub.price("price_addon"),
        quantity=1,
        current_period_start=ours["current_period_start"],
        current_period_end=ours["current_period_end"],
    )
    sub["items"]["data"].insert(0, addon)

    assert change(api, customer, "pro").status_code == 200

    (modify,) = stripe_stub.calls("POST", f"/v1/subscriptions/{sub['id']}")
    assert modify.params == {"items": [{"id": ours["id"], "price": "price_pro"}]}


@pytest.mark.parametrize("plan_key", ["nope", "", "a" * 65])
def test_change_plan_bad_input_changes_nothing(api, plans, customer, plan_key):
    subscriptions.subscription_set(customer=customer, plan_key="basic")
    response = change(api, customer, plan_key)
    assert response.status_code == 400 and "planKey" in response.json()
    assert Subscription.objects.get(customer=customer).plan.key == "basic"
    assert BillingPeriod.objects.filter(customer=customer).count() == 1


def test_change_plan_answers_post_only(api, plans, customer):
    subscriptions.subscription_set(customer=customer, plan_key="basic")
    assert api.get(f"{base(customer)}/change-plan").status_code == 405
    assert api.put(f"{base(customer)}/change-plan", {"planKey": "pro"}).status_code == 405
    assert Subscription.objects.get(customer=customer).plan.key == "basic"


def test_change_plan_to_a_plan_without_price_on_stripe_is_400(api, plans, customer, stripe_stub):
    PlanFactory(key="internal")
    subscribe_on_stripe(stripe_stub, customer, price="price_basic")
    requests = len(stripe_stub.requests)

    response = change(api, customer, "internal")

    assert response.status_code == 400 and "planKey" in response.json()
    assert len(stripe_stub.requests) == requests


def test_change_plan_without_subscription_is_409(api, plans, customer):
    assert change(api, customer, "pro").status_code == 409


def test_change_plan_stripe_error_is_502_with_a_short_message(
    api, plans, customer, stripe_stub, caplog
):
    _, sub = subscribe_on_stripe(stripe_stub, customer, price="price_basic")
    refuse(stripe_stub, "POST", f"/v1/subscriptions/{sub['id']}", "req_77 at stripe-internal")

    response = change(api, customer, "pro")

    assert response.status_code == 502
    assert response.json() == {"detail": "Stripe could not do this now; nothing was changed."}
    assert "req_77" in caplog.text
    assert state_of(customer)["plan"] == "basic"


def test_change_plan_stripe_refuses_is_409_and_changes_nothing(api, plans, customer, stripe_stub):
    _, sub = subscribe_on_stripe(stripe_stub, customer, price="price_basic")
    stripe_stub.objects[sub["id"]]["status"] = "canceled"  # there, not here
    stripe_stub.price("price_pro")
    before = state_of(customer)

    response = change(api, customer, "pro")

    assert response.status_code == 409
    assert "Stripe refused" in response.json()["detail"]
    assert state_of(customer) == before


def test_change_accepted_by_stripe_whose_apply_fails_is_202_until_retried(
    api, admin_client, plans, customer, stripe_stub, monkeypatch
):
    stripe_stub.price("price_pro")  # Stripe moves an item only to a price it has
    from django.db import OperationalError

    from billing_app.stripe import sync

    _, sub = subscribe_on_stripe(stripe_stub, customer, price="price_basic")

    def deadlock(**kwargs):
        raise OperationalError("deadlock detected")

    with monkeypatch.context() as patched:
        patched.setattr(sync, "subscription_set", deadlock)
        response = change(api, customer, "pro")

    assert response.status_code == 202
    assert state_of(customer)["plan"] == "basic"
    problem = Problem.objects.get()
    assert (problem.kind, problem.subject) == ("stripe_not_applied", f"stripe:{sub['id']}")

    response = admin_client.post(
        reverse("admin:billing_app_problem_changelist"),
        {"action": "retry", "_selected_action": [problem.pk]},
        follow=True,
    )

    assert "1 of 1 applied." in response.content.decode()
    assert state_of(customer) == expected(stripe_stub.objects[sub["id"]])
    assert state_of(customer)["plan"] == "pro"
    assert not Problem.objects.exists()


# --- cancel and reactivate -------------------------------------------------------------


def test_operator_cancel_now_ends_the_period_and_its_record_is_final(api, plans, customer, clock):
    subscriptions.subscription_set(customer=customer, plan_key="basic")
    ended = clock.set(clock.now + timedelta(hours=1))

    response = api.post(f"{base(customer)}/cancel", {"when": "now"}, format="json")

    assert response.status_code == 200 and response.json()["success"] is True
    period = BillingPeriod.objects.get(customer=customer)
    assert (period.end, period.end_reason) == (ended, "cancellation")
    (record,) = records_close()
    assert record.status == "final"
    assert api.post(f"{base(customer)}/cancel", {}, format="json").status_code == 409


def test_operator_cancel_at_end(api, plans, customer):
    subscriptions.subscription_set(customer=customer, plan_key="basic")
    response = api.post(f"{base(customer)}/cancel", {}, format="json")
    assert response.status_code == 200
    subscription = Subscription.objects.get(customer=customer)
    assert subscription.cancel_at_period_end is True and subscription.status == "active"
    assert records_close() == []


def test_operator_reactivate_undoes_a_pending_cancellation_on_stripe(
    api, plans, customer, stripe_stub
):
    _, sub = subscribe_on_stripe(stripe_stub, customer, price="price_basic")
    assert api.post(f"{base(customer)}/cancel", {}, format="json").status_code == 200
    assert stripe_stub.objects[sub["id"]]["cancel_at_period_end"] is True

    response = api.post(f"{base(customer)}/reactivate", {}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["cancelAtPeriodEnd"] is False
    *_, undo = stripe_stub.calls("POST", f"/v1/subscriptions/{sub['id']}")
    assert undo.params == {"cancel_at_period_end": "false"}
    assert stripe_stub.objects[sub["id"]]["cancel_at_period_end"] is False
    assert state_of(customer) == expected(stripe_stub.objects[sub["id"]])


def test_operator_reactivate_without_stripe(api, plans, customer, stripe_stub):
    subscriptions.subscription_set(customer=customer, plan_key="basic", cancel_at_period_end=True)

    response = api.post(f"{base(customer)}/reactivate", {}, format="json")

    assert response.status_code == 200
    assert Subscription.objects.get(customer=customer).cancel_at_period_end is False
    assert api.post(f"{base(customer)}/reactivate", {}, format="json").status_code == 409
    assert stripe_stub.requests == []


def test_plan_change_cancel_and_reactivate_need_an_operator(anonymous, customer_token, customer):
    anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {customer_token}")
    assert anonymous.post(f"{base(customer)}/change-plan", {"planKey": "pro"}).status_code == 403
    assert anonymous.post(f"{base(customer)}/cancel", {}).status_code == 403
    assert anonymous.post(f"{base(customer)}/reactivate", {}).status_code == 403
