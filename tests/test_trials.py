"""Trials: a plan's trial length, one trial per customer (and per Stripe customer), a trial
without a card started by the operator, what happens at its end (convert, fall back,
stop) carried out by the scheduler, and Stripe's trialing state kept in step."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from djstripe.models import Subscription as StripeSubscription

from billing_app.catalog import services as catalog
from billing_app.entitlements import entitlement_for
from billing_app.exceptions import Conflict, InvalidInput
from billing_app.models import BillingPeriod, Subscription
from billing_app.stripe.sync import subscription_sync
from billing_app.subscriptions import services as subscriptions
from billing_app.subscriptions.selectors import trial_taken

from .factories import AccountKitFactory, CustomerFactory
from .utils import (
    at,
    deliver,
    error_fields,
    iso,
    periods,
    stripe_customer_for,
    subscribe_on_stripe,
    subscription_state,
    ts,
)

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)
START = at("2026-03-10 12:00")
TRIAL_END = START + 14 * DAY


@pytest.fixture
def plans(db):
    AccountKitFactory(key="kit-free", allow={"seo": None})
    AccountKitFactory(key="kit-pro", allow={"seo": None, "aeo": None})
    catalog.plan_upsert(key="free", name="Free", account_kit_id="kit-free", quotas={"seo": 10})
    return catalog.plan_upsert(
        key="pro",
        name="Pro",
        account_kit_id="kit-pro",
        stripe_price_id="price_pro",
        quotas={"seo": 1000},
        trial_days=14,
    )[0]


def trial_action(action: str, fallback: str | None = None) -> None:
    catalog.plan_upsert(
        key="pro", name="Pro", trial_end_action=action, trial_fallback_plan=fallback
    )


def test_a_trial_without_stripe_or_a_card(plans, customer):
    subscription = subscriptions.trial_start(customer=customer, plan_key="pro", at=START)

    assert (subscription.status, subscription.trial_start, subscription.trial_end) == (
        "trialing",
        START,
        TRIAL_END,
    )
    assert (subscription.stripe_customer_id, subscription.stripe_subscription_id) == ("", "")
    # The trial is the first period; billing cycles count from its end, as Stripe's do.
    assert subscription.billing_cycle_anchor == TRIAL_END
    assert periods(customer) == [(START, TRIAL_END, "operator", "pro")]
    entitlement = entitlement_for(customer_id=customer.pk, fresh=True)
    assert (entitlement.plan, entitlement.status, entitlement.inactive) == ("pro", "trialing", None)
    assert trial_taken(customer=customer)


def test_a_trial_can_end_when_the_operator_says(plans, customer):
    end = START + 3 * DAY
    subscription = subscriptions.trial_start(
        customer=customer, plan_key="pro", trial_end=end, at=START
    )
    assert subscription.trial_end == end


@pytest.mark.parametrize(
    ("plan_key", "trial_end", "field"),
    [
        ("free", None, "plan_key"),  # the plan has no trial length: say when it ends
        ("nowhere", None, "plan_key"),
        ("pro", START, "trial_end"),
        ("pro", START - DAY, "trial_end"),
        ("pro", START + 731 * DAY, "trial_end"),  # at most 730 days, as a plan's trial
    ],
)
def test_bad_trials_are_refused_and_change_nothing(plans, customer, plan_key, trial_end, field):
    before = subscription_state(customer)
    with pytest.raises(InvalidInput) as refused:
        subscriptions.trial_start(
            customer=customer, plan_key=plan_key, trial_end=trial_end, at=START
        )
    assert error_fields(refused) == {field}
    assert subscription_state(customer) == before


def test_one_trial_per_customer(plans, customer):
    subscriptions.trial_start(customer=customer, plan_key="pro", at=START)
    subscriptions.subscription_set(
        customer=customer, plan_key="pro", status="canceled", at=START + DAY
    )
    before = subscription_state(customer)

    with pytest.raises(Conflict):
        subscriptions.trial_start(customer=customer, plan_key="pro", at=START + 30 * DAY)
    assert subscription_state(customer) == before


def test_one_trial_per_stripe_customer(plans):
    first, second = CustomerFactory(), CustomerFactory()
    subscriptions.trial_start(customer=first, plan_key="pro", at=START)
    subscriptions.subscription_set(customer=first, plan_key="pro", stripe_customer_id="cus_1")
    # Another customer of ours billed to the same Stripe customer.
    subscriptions.subscription_set(
        customer=second, plan_key="free", stripe_customer_id="cus_1", at=START
    )
    assert trial_taken(customer=second)
    with pytest.raises(Conflict):
        subscriptions.trial_start(customer=second, plan_key="pro", at=START + DAY)


def test_a_trial_stripe_gave_counts_too(plans, customer, stripe_stub):
    # A trial on Stripe that never reached this app (made in the dashboard, say): dj-stripe
    # has it synced.
    stripe_customer = stripe_customer_for(stripe_stub, customer)
    sub = stripe_stub.subscription(
        customer=stripe_customer["id"],
        price="price_other",
        status="canceled",
        trial_end=ts(START + 7 * DAY),
        start=ts(START),
    )
    StripeSubscription.sync_from_stripe_data(StripeSubscription(id=sub["id"]).api_retrieve())

    assert trial_taken(customer=customer)
    with pytest.raises(Conflict):
        subscriptions.trial_start(customer=customer, plan_key="pro", at=START + 30 * DAY)


def test_no_trial_while_stripe_drives_the_subscription(plans, customer, stripe_stub):
    subscribe_on_stripe(stripe_stub, customer)
    with pytest.raises(Conflict):
        subscriptions.trial_start(customer=customer, plan_key="pro")


def test_a_free_customer_tries_pro(plans, customer):
    subscriptions.subscription_set(customer=customer, plan_key="free", at=START - 5 * DAY)
    subscriptions.trial_start(customer=customer, plan_key="pro", at=START)

    assert periods(customer) == [
        (START - 5 * DAY, START, "cadence", "free"),
        (START, TRIAL_END, "operator", "pro"),
    ]
    assert entitlement_for(customer_id=customer.pk, fresh=True).plan == "pro"


# --- the end of a trial, carried out by the scheduler ------------------------------------


def test_nothing_happens_before_the_trial_ends(plans, customer):
    subscriptions.trial_start(customer=customer, plan_key="pro", at=START)
    subscriptions.periods_advance(at=TRIAL_END - timedelta(seconds=1))
    assert Subscription.objects.get(customer=customer).status == "trialing"


def test_convert_goes_on_active_from_the_trials_end(plans, customer):
    subscriptions.trial_start(customer=customer, plan_key="pro", at=START)

    assert subscriptions.periods_advance(at=TRIAL_END + 3 * DAY) == []

    subscription = Subscription.objects.get(customer=customer)
    assert (subscription.status, subscription.status_changed_at) == ("active", TRIAL_END)
    assert (subscription.plan.key, subscription.trial_end) == ("pro", TRIAL_END)
    assert periods(customer) == [
        (START, TRIAL_END, "operator", "pro"),
        (TRIAL_END, at("2026-04-24 12:00"), "cadence", "pro"),
    ]
    # Converted once: the scheduler does not act on it again.
    subscriptions.periods_advance(at=TRIAL_END + 4 * DAY)
    assert Subscription.objects.get(customer=customer).status_changed_at == TRIAL_END


def test_fallback_moves_to_the_named_plan(plans, customer):
    trial_action("fallback", "free")
    subscriptions.trial_start(customer=customer, plan_key="pro", at=START)

    subscriptions.periods_advance(at=TRIAL_END + DAY)

    subscription = Subscription.objects.get(customer=customer)
    assert (subscription.plan.key, subscription.status) == ("free", "active")
    assert periods(customer) == [
        (START, TRIAL_END, "operator", "pro"),
        (TRIAL_END, at("2026-04-24 12:00"), "cadence", "free"),
    ]
    entitlement = entitlement_for(customer_id=customer.pk, fresh=True)
    assert (entitlement.plan, entitlement.quotas["seo"].limit) == ("free", 10)
    assert set(entitlement.kit) == {"seo"}  # the fallback plan's kit


def test_fallback_moves_to_the_fallback_plan_setting(plans, customer, settings):
    settings.BILLING_FALLBACK_PLAN = "free"
    trial_action("fallback")
    subscriptions.trial_start(customer=customer, plan_key="pro", at=START)

    subscriptions.periods_advance(at=TRIAL_END + DAY)

    subscription = Subscription.objects.get(customer=customer)
    assert (subscription.plan.key, subscription.status) == ("free", "active")


def test_fallback_with_nowhere_to_go_stops(plans, customer, settings, caplog):
    settings.BILLING_FALLBACK_PLAN = "free"
    trial_action("fallback")
    settings.BILLING_FALLBACK_PLAN = None  # removed after the plan was set
    subscriptions.trial_start(customer=customer, plan_key="pro", at=START)

    subscriptions.periods_advance(at=TRIAL_END + DAY)

    assert Subscription.objects.get(customer=customer).status == "canceled"
    assert "no plan to fall back to" in caplog.text


def test_stop_cancels_at_the_trials_end(plans, customer):
    trial_action("stop")
    subscriptions.trial_start(customer=customer, plan_key="pro", at=START)

    subscriptions.periods_advance(at=TRIAL_END + 5 * DAY)

    subscription = Subscription.objects.get(customer=customer)
    assert (subscription.status, subscription.ended_at) == ("canceled", TRIAL_END)
    assert periods(customer) == [(START, TRIAL_END, "operator", "pro")]
    assert BillingPeriod.objects.get(customer=customer).end_reason == "cancellation"
    assert entitlement_for(customer_id=customer.pk, fresh=True).inactive


def test_a_trial_cancelled_at_period_end_ends_with_it(plans, customer):
    subscriptions.trial_start(customer=customer, plan_key="pro", at=START)
    subscriptions.subscription_cancel_here(customer=customer, when="end", at=START + DAY)

    subscriptions.periods_advance(at=TRIAL_END + DAY)

    subscription = Subscription.objects.get(customer=customer)
    assert (subscription.status, subscription.ended_at) == ("canceled", TRIAL_END)


# --- Stripe drives it -----------------------------------------------------------------


def test_stripes_trialing_state_is_kept_in_step(plans, customer, stripe_stub):
    _, sub = subscribe_on_stripe(
        stripe_stub,
        customer,
        status="trialing",
        start=ts(START),
        trial_end=ts(TRIAL_END),
        billing_cycle_anchor=ts(TRIAL_END),
    )
    subscription = Subscription.objects.get(customer=customer)
    assert (subscription.status, subscription.trial_start, subscription.trial_end) == (
        "trialing",
        START,
        TRIAL_END,
    )
    assert trial_taken(customer=customer)

    # The scheduler leaves a trial Stripe drives to Stripe.
    subscriptions.periods_advance(at=TRIAL_END + DAY)
    assert Subscription.objects.get(customer=customer).status == "trialing"

    # Stripe converts it.
    stripe_stub.update(sub["id"], status="active")
    subscription_sync(sub["id"])
    subscription = Subscription.objects.get(customer=customer)
    assert (subscription.status, subscription.trial_end) == ("active", TRIAL_END)


def test_a_trial_extended_on_stripe_is_applied(plans, customer, stripe_stub):
    _, sub = subscribe_on_stripe(
        stripe_stub, customer, status="trialing", start=ts(START), trial_end=ts(TRIAL_END)
    )
    later = TRIAL_END + 7 * DAY
    stripe_stub.update(sub["id"], trial_end=ts(later))
    deliver(Client(), stripe_stub.event("customer.subscription.updated", sub))

    assert Subscription.objects.get(customer=customer).trial_end == later


# --- Checkout -------------------------------------------------------------------------


CHECKOUT = {
    "priceId": "price_pro",
    "successUrl": "https://testserver/billing/done",
    "cancelUrl": "https://testserver/pricing",
}


def checkout_params(client, stripe_stub) -> dict:
    stripe_stub.price("price_pro")
    response = client.post("/billing/checkout", CHECKOUT, format="json")
    assert response.status_code == 200, response.content
    return stripe_stub.calls("POST", "/v1/checkout/sessions")[-1].params


def test_checkout_offers_the_plans_trial_to_a_new_customer(plans, customer_client, stripe_stub):
    sent = checkout_params(customer_client, stripe_stub)
    assert sent["subscription_data"]["trial_period_days"] == "14"


def test_checkout_offers_no_trial_to_a_customer_who_had_one(
    plans, customer, customer_client, stripe_stub
):
    subscriptions.trial_start(customer=customer, plan_key="pro", at=START)
    subscriptions.subscription_set(
        customer=customer, plan_key="pro", status="canceled", at=START + DAY
    )
    sent = checkout_params(customer_client, stripe_stub)
    assert "trial_period_days" not in sent["subscription_data"]


def test_checkout_offers_no_trial_to_a_stripe_customer_who_had_one(
    plans, customer, customer_client, stripe_stub
):
    stripe_customer = stripe_customer_for(stripe_stub, customer)
    sub = stripe_stub.subscription(
        customer=stripe_customer["id"],
        price="price_other",
        status="canceled",
        trial_end=ts(START + 7 * DAY),
        start=ts(START),
    )
    StripeSubscription.sync_from_stripe_data(StripeSubscription(id=sub["id"]).api_retrieve())

    sent = checkout_params(customer_client, stripe_stub)
    assert "trial_period_days" not in sent["subscription_data"]


def test_checkout_of_a_plan_without_a_trial_offers_none(plans, customer_client, stripe_stub):
    catalog.plan_upsert(key="pro", name="Pro", trial_days=0)
    sent = checkout_params(customer_client, stripe_stub)
    assert "trial_period_days" not in sent["subscription_data"]


# --- the operator API -----------------------------------------------------------------


def test_the_api_starts_a_trial(plans, api, customer):
    response = api.post(
        f"/v1/users/{customer.pk}/billing/subscription/trial", {"planKey": "pro"}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["planKey"], body["status"]) == ("pro", "trialing")
    assert body["trialEnd"] == iso(Subscription.objects.get(customer=customer).trial_end)
    assert body["currentPeriodEnd"] == body["trialEnd"]

    again = api.post(
        f"/v1/users/{customer.pk}/billing/subscription/trial", {"planKey": "pro"}, format="json"
    )
    assert again.status_code == 409


def test_the_api_refuses_a_trial_that_ends_in_the_past(plans, api, customer):
    before = subscription_state(customer)
    response = api.post(
        f"/v1/users/{customer.pk}/billing/subscription/trial",
        {"planKey": "pro", "trialEnd": "2020-01-01T00:00:00Z"},
        format="json",
    )
    assert response.status_code == 400
    assert "trialEnd" in response.json()
    assert subscription_state(customer) == before


def test_the_plan_api_sets_the_trial(api, plans):
    response = api.post(
        "/v1/plans",
        {
            "key": "pro",
            "name": "Pro",
            "trialDays": 30,
            "trialEndAction": "fallback",
            "trialFallbackPlan": "free",
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["trialDays"], body["trialEndAction"], body["trialFallbackPlan"]) == (
        30,
        "fallback",
        "free",
    )


def test_the_operator_can_put_a_trial_directly(plans, api, customer):
    trial_end = (timezone.now() + 7 * DAY).replace(microsecond=0)
    response = api.put(
        f"/v1/users/{customer.pk}/billing/subscription",
        {"planKey": "pro", "status": "trialing", "trialEnd": iso(trial_end)},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["trialEnd"] == iso(trial_end)
    subscription = Subscription.objects.get(customer=customer)
    assert subscription.trial_start is not None and trial_taken(customer=customer)

    subscriptions.periods_advance(at=trial_end + DAY)
    assert Subscription.objects.get(customer=customer).status == "active"


def test_a_trial_that_ends_before_it_starts_is_refused(plans, customer):
    with pytest.raises(InvalidInput) as refused:
        subscriptions.subscription_set(
            customer=customer, plan_key="pro", trial_start=START, trial_end=START - DAY
        )
    assert error_fields(refused) == {"trial_end"}
    assert not Subscription.objects.exists()
