"""License checks (``GET /v1/licenses/check?granteeIds=a,b[&grace=3]``), as Salable
answers them: every capability (plan key, kit primitives, plan features) the grantees hold
through seats, and through their own subscription when customers are users; 204 when
none. ``grace`` keeps a lapsed subscription's capabilities that many days, no longer."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from billing_app.catalog.services import account_kit_upsert, plan_upsert
from billing_app.conf import customer_is_user
from billing_app.models import BillingPeriod
from billing_app.subscriptions.services import seats_manage, subscription_set

from ..factories import CustomerFactory, UserFactory
from ..utils import assert_field_error, iso

pytestmark = pytest.mark.django_db

TEAM = ["csv-export", "email.send", "seo", "sso", "team"]  # features, primitives, plan


@pytest.fixture
def catalog(db):
    account_kit_upsert(key="kit-team", name="Team kit", primitives={"seo": None, "email.send": 5})
    plan_upsert(key="team", name="Team", account_kit_id="kit-team", features=["sso", "csv-export"])
    plan_upsert(key="solo", name="Solo", features=["audit-log"])


def seated(customer, plan_key: str, *grantees, **fields):
    subscription = subscription_set(customer=customer, plan_key=plan_key, seats=3, **fields)
    seats_manage(
        subscription_id=subscription.pk,
        operations=[{"type": "add", "grantee_id": grantee.pk} for grantee in grantees],
    )
    return subscription


def check(api, *grantees, **params):
    ids = ",".join(str(getattr(grantee, "pk", grantee)) for grantee in grantees)
    return api.get("/v1/licenses/check", {"granteeIds": ids, **params})


def capabilities(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [c["capability"] for c in response.json()["capabilities"]]


def test_a_seat_holder_holds_the_plan_its_kit_and_its_features(api, catalog, customer, user):
    subscription = seated(customer, "team", user)
    period = BillingPeriod.objects.get(subscription=subscription)

    response = check(api, user)

    assert capabilities(response) == TEAM
    assert {c["expiry"] for c in response.json()["capabilities"]} == {iso(period.end)}
    assert response.json()["granteeIds"] == [str(user.pk)]


def test_no_capability_answers_204(api, catalog, customer, user):
    seated(customer, "team", user)
    nobody = UserFactory()

    for grantees in ([nobody], ["abc"], ["999999"], [nobody, "abc"]):
        response = check(api, *grantees)
        assert response.status_code == 204, (grantees, response.content)
        assert response.content == b""


def test_several_grantees_and_subscriptions_answer_every_capability_once(api, catalog, user):
    other = UserFactory()
    seated(CustomerFactory(), "team", user)
    seated(CustomerFactory(), "solo", user, other)

    assert capabilities(check(api, user)) == sorted([*TEAM, "audit-log", "solo"])
    assert capabilities(check(api, other)) == ["audit-log", "solo"]
    assert capabilities(check(api, other, user)) == sorted([*TEAM, "audit-log", "solo"])


def test_a_removed_seat_no_longer_licenses(api, catalog, customer, user):
    subscription = seated(customer, "team", user)
    seats_manage(
        subscription_id=subscription.pk, operations=[{"type": "remove", "grantee_id": user.pk}]
    )
    assert check(api, user).status_code == 204


@pytest.mark.skipif(not customer_is_user(), reason="only a user can be its own customer")
def test_a_user_holds_its_own_subscription_without_a_seat(api, catalog, customer):
    subscription_set(customer=customer, plan_key="solo")
    assert capabilities(check(api, customer)) == ["audit-log", "solo"]


def test_past_due_still_licenses(api, catalog, customer, user):
    subscription = seated(customer, "team", user)
    subscription_set(customer=customer, plan_key="team", status="past_due")
    assert subscription.seats == 3
    assert capabilities(check(api, user)) == TEAM


def lapse(customer, how: str, ago: timedelta) -> datetime:
    """End (canceled) or stop paying (unpaid) ``ago``; answers when."""
    at = timezone.now() - ago
    if how == "canceled":
        subscription_set(customer=customer, plan_key="team", status="canceled", ended_at=at)
    else:
        subscription_set(customer=customer, plan_key="team", status="unpaid", at=at)
    return at


@pytest.mark.parametrize("how", ["canceled", "unpaid"])
def test_grace_keeps_a_lapsed_subscription_that_many_days_and_no_longer(
    api, catalog, customer, user, how
):
    seated(customer, "team", user)
    lapsed = lapse(customer, how, timedelta(days=2, minutes=1))

    assert check(api, user).status_code == 204  # no grace
    assert check(api, user, grace=0).status_code == 204
    assert check(api, user, grace=2).status_code == 204  # lapsed more than 2 days ago

    response = check(api, user, grace=3)

    assert capabilities(response) == TEAM
    assert {c["expiry"] for c in response.json()["capabilities"]} == {
        iso(lapsed + timedelta(days=3))
    }


def test_a_live_subscription_outlasts_a_lapsed_one_for_the_same_capability(
    api, catalog, customer, user
):
    seated(customer, "team", user)
    lapse(customer, "canceled", timedelta(days=1))
    live = seated(CustomerFactory(), "team", user)
    period = BillingPeriod.objects.get(subscription=live)

    response = check(api, user, grace=3)

    assert {c["expiry"] for c in response.json()["capabilities"]} == {iso(period.end)}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"granteeIds": ""}, "granteeIds"),
        ({"granteeIds": ","}, "granteeIds"),
        ({"granteeIds": " , ,"}, "granteeIds"),
        ({}, "granteeIds"),
        ({"granteeIds": ",".join(str(n) for n in range(101))}, "granteeIds"),
        ({"granteeIds": "1", "grace": "-1"}, "grace"),
        ({"granteeIds": "1", "grace": "three"}, "grace"),
        ({"granteeIds": "1", "grace": "1.5"}, "grace"),
        ({"granteeIds": "1", "grace": "3651"}, "grace"),
        ({"granteeIds": "1", "grace": str(2**64)}, "grace"),
    ],
)
def test_bad_grantee_ids_or_grace_answer_400(api, catalog, customer, user, params, field):
    seated(customer, "team", user)
    assert_field_error(api.get("/v1/licenses/check", params), field)
