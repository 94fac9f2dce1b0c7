"""The subscriptions' writer: ``subscription_set`` keeps the subscription, its billing
periods, the customer's kit and entitlement version true together; ``seats_manage``
applies Salable's seat operations."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from billing_app.catalog.services import plan_upsert
from billing_app.customers import selectors as customers_selectors
from billing_app.customers import services as customers
from billing_app.entitlements import entitlement_for, version_of
from billing_app.exceptions import Conflict, InvalidInput, NotFound, QuotaExceeded
from billing_app.metering.services import usage_reserve
from billing_app.models import BillingPeriod, Seat, Subscription
from billing_app.periods import add_months
from billing_app.subscriptions import services as subscriptions

from .factories import AccountKitFactory, PlanFactory, UserFactory
from .utils import error_fields, holders, subscription_state

pytestmark = pytest.mark.django_db

JAN_1 = datetime(2026, 1, 1, tzinfo=UTC)
JAN_10 = datetime(2026, 1, 10, tzinfo=UTC)
JAN_20 = datetime(2026, 1, 20, tzinfo=UTC)
FEB_1 = datetime(2026, 2, 1, tzinfo=UTC)
MAR_1 = datetime(2026, 3, 1, tzinfo=UTC)


def periods(customer) -> list[tuple]:
    """The customer's billing periods, oldest first, as (start, end, plan, source, reason)."""
    return list(
        BillingPeriod.objects.filter(customer=customer)
        .order_by("start")
        .values_list("start", "end", "plan__key", "source", "end_reason")
    )


@pytest.fixture
def kit_pro(db):
    return AccountKitFactory(key="kit-pro")


@pytest.fixture
def pro(kit_pro):
    return PlanFactory(key="pro", account_kit=kit_pro, limits={"seo": 1000})


@pytest.fixture
def free(db):
    return PlanFactory(key="free", account_kit=AccountKitFactory(key="kit-free"))


# subscription_set


def test_subscription_set_creates_a_subscription_with_its_period_and_the_plan_kit(customer, pro):
    subscription = subscriptions.subscription_set(
        customer=customer,
        plan_key="pro",
        status="trialing",
        stripe_customer_id="cus_1",
        stripe_subscription_id="sub_1",
        current_period_start=JAN_1,
        current_period_end=FEB_1,
        cancel_at_period_end=True,
        seats=3,
        at=JAN_10,
    )

    subscription.refresh_from_db()
    assert subscription.customer == customer
    assert subscription.plan == pro
    assert subscription.status == "trialing"
    assert (subscription.stripe_customer_id, subscription.stripe_subscription_id) == (
        "cus_1",
        "sub_1",
    )
    assert subscription.cancel_at_period_end
    assert subscription.seats == 3
    # The stated period starts it, and its start anchors the quota windows.
    assert (subscription.started_at, subscription.billing_cycle_anchor) == (JAN_1, JAN_1)
    assert subscription.status_changed_at == JAN_10
    assert periods(customer) == [(JAN_1, FEB_1, "pro", "operator", "")]
    assert customers_selectors.kit_of(customer=customer) == pro.account_kit


def test_subscription_set_defaults_for_a_new_subscription(customer, pro):
    subscription = subscriptions.subscription_set(customer=customer, plan_key="pro", at=JAN_10)

    subscription.refresh_from_db()
    assert subscription.status == "active"
    assert subscription.seats == 1
    assert not subscription.cancel_at_period_end
    assert subscription.ended_at is None
    assert subscription.started_at == subscription.billing_cycle_anchor == JAN_10
    assert subscription.status_changed_at == JAN_10
    # Without a stated period, periods follow the plan's cadence (P1M) from the start.
    assert periods(customer) == [(JAN_10, datetime(2026, 2, 10, tzinfo=UTC), "pro", "cadence", "")]


def test_a_given_anchor_ends_the_first_period_at_its_next_cycle(customer, pro):
    subscription = subscriptions.subscription_set(
        customer=customer, plan_key="pro", billing_cycle_anchor=JAN_1, at=JAN_10
    )

    assert subscription.billing_cycle_anchor == JAN_1
    assert subscription.started_at == JAN_10
    assert periods(customer) == [(JAN_10, FEB_1, "pro", "cadence", "")]


def test_periods_follow_the_plan_cadence_up_to_now(customer):
    PlanFactory(key="quarterly", billing_cadence="P3M")
    subscriptions.subscription_set(customer=customer, plan_key="quarterly", at=JAN_1)
    later = datetime(2026, 7, 15, tzinfo=UTC)

    subscriptions.subscription_set(customer=customer, plan_key="quarterly", at=later)

    starts = [JAN_1, add_months(JAN_1, 3), add_months(JAN_1, 6)]
    assert [(p[0], p[1]) for p in periods(customer)] == [
        (start, add_months(start, 3)) for start in starts
    ]


def test_subscription_set_changes_plan_and_kit_and_splits_the_period(customer, pro, free):
    subscriptions.subscription_set(customer=customer, plan_key="pro", at=JAN_1)
    subscriptions.subscription_set(customer=customer, plan_key="free", at=JAN_20)

    subscription = Subscription.objects.get(customer=customer)
    assert subscription.plan == free
    assert Subscription.objects.count() == 1
    assert customers_selectors.kit_of(customer=customer) == free.account_kit
    # The period on the old plan ends at the change; the rest of it is on the new plan.
    assert periods(customer) == [
        (JAN_1, JAN_20, "pro", "cadence", "plan_change"),
        (JAN_20, FEB_1, "free", "cadence", ""),
    ]
    # A plan change is not a restart: the anchor and start stay.
    assert subscription.billing_cycle_anchor == subscription.started_at == JAN_1


def test_subscription_set_unset_arguments_keep_their_value(customer, pro, free):
    subscriptions.subscription_set(
        customer=customer,
        plan_key="pro",
        status="past_due",
        stripe_customer_id="cus_1",
        stripe_subscription_id="sub_1",
        current_period_start=JAN_1,
        current_period_end=FEB_1,
        cancel_at_period_end=True,
        seats=4,
        at=JAN_10,
    )

    subscriptions.subscription_set(customer=customer, plan_key="free", at=JAN_20)

    subscription = Subscription.objects.get(customer=customer)
    assert subscription.plan == free
    assert subscription.status == "past_due"
    assert subscription.status_changed_at == JAN_10
    assert (subscription.stripe_customer_id, subscription.stripe_subscription_id) == (
        "cus_1",
        "sub_1",
    )
    assert subscription.cancel_at_period_end
    assert subscription.seats == 4
    assert subscription.billing_cycle_anchor == JAN_1
    assert [(p[0], p[1]) for p in periods(customer)] == [(JAN_1, JAN_20), (JAN_20, FEB_1)]


def test_subscription_set_none_clears_the_stripe_ids(customer, pro):
    subscriptions.subscription_set(
        customer=customer, plan_key="pro", stripe_customer_id="cus_1", stripe_subscription_id="s"
    )
    subscriptions.subscription_set(
        customer=customer, plan_key="pro", stripe_customer_id=None, stripe_subscription_id=None
    )
    subscription = Subscription.objects.get(customer=customer)
    assert (subscription.stripe_customer_id, subscription.stripe_subscription_id) == ("", "")


def test_status_changed_at_moves_only_when_the_status_changes(customer, pro):
    subscriptions.subscription_set(customer=customer, plan_key="pro", status="active", at=JAN_1)

    subscriptions.subscription_set(customer=customer, plan_key="pro", status="active", at=JAN_10)
    subscriptions.subscription_set(
        customer=customer, plan_key="pro", stripe_customer_id="cus_1", at=JAN_10
    )
    assert Subscription.objects.get(customer=customer).status_changed_at == JAN_1

    subscriptions.subscription_set(customer=customer, plan_key="pro", status="past_due", at=JAN_20)
    subscription = Subscription.objects.get(customer=customer)
    assert subscription.status == "past_due"
    assert subscription.status_changed_at == JAN_20


def test_ending_a_subscription_ends_its_period_there(customer, pro):
    subscriptions.subscription_set(customer=customer, plan_key="pro", at=JAN_1)
    # Periods predicted up to March, then the cancellation heard for Jan 20.
    subscriptions.subscription_set(customer=customer, plan_key="pro", at=MAR_1 + timedelta(days=1))

    subscription = subscriptions.subscription_set(
        customer=customer, plan_key="pro", status="canceled", ended_at=JAN_20, at=MAR_1
    )

    assert subscription.ended
    assert subscription.ended_at == JAN_20
    assert periods(customer) == [(JAN_1, JAN_20, "pro", "cadence", "cancellation")]


def test_a_subscription_that_starts_again_gets_a_new_anchor_and_period(customer, pro):
    subscriptions.subscription_set(customer=customer, plan_key="pro", at=JAN_1)
    subscriptions.subscription_set(customer=customer, plan_key="pro", status="canceled", at=JAN_10)

    subscription = subscriptions.subscription_set(
        customer=customer, plan_key="pro", status="active", at=JAN_20
    )

    assert subscription.started_at == subscription.billing_cycle_anchor == JAN_20
    assert subscription.ended_at is None
    assert periods(customer) == [
        (JAN_1, JAN_10, "pro", "cadence", "cancellation"),
        (JAN_20, datetime(2026, 2, 20, tzinfo=UTC), "pro", "cadence", ""),
    ]
    assert Subscription.objects.count() == 1


def test_subscription_set_without_assign_kit_leaves_the_kit_alone(customer, pro):
    own_kit = AccountKitFactory()
    customers.kit_assign(customer=customer, kit=own_kit)

    subscriptions.subscription_set(customer=customer, plan_key="pro", assign_kit=False)

    assert Subscription.objects.get(customer=customer).plan == pro
    assert customers_selectors.kit_of(customer=customer) == own_kit


def test_subscription_set_to_a_plan_without_kit_removes_the_kit(customer):
    PlanFactory(key="open", account_kit=None)
    customers.kit_assign(customer=customer, kit=AccountKitFactory())

    subscriptions.subscription_set(customer=customer, plan_key="open")

    assert customers_selectors.kit_of(customer=customer) is None


def test_every_change_raises_the_customer_entitlement_version(customer, pro, free):
    seen = [version_of(customer.pk)]
    for change in (
        {"plan_key": "pro"},
        {"plan_key": "pro", "seats": 2},
        {"plan_key": "free"},
        {"plan_key": "free", "status": "past_due"},
        {"plan_key": "free", "assign_kit": False},
    ):
        subscriptions.subscription_set(customer=customer, **change)
        seen.append(version_of(customer.pk))
    assert seen == sorted(set(seen)), seen


def failing_kit_assign(**kwargs):
    raise RuntimeError("kit assignment failed")


def test_subscription_periods_and_kit_change_in_one_transaction(customer, pro, free, monkeypatch):
    subscriptions.subscription_set(customer=customer, plan_key="free", status="active")
    before = subscription_state(customer)

    monkeypatch.setattr(subscriptions, "kit_assign", failing_kit_assign)
    with pytest.raises(RuntimeError, match="kit assignment failed"):
        subscriptions.subscription_set(
            customer=customer, plan_key="pro", status="past_due", stripe_customer_id="cus_9"
        )

    assert subscription_state(customer) == before
    assert customers_selectors.kit_of(customer=customer) == free.account_kit


def test_a_new_subscription_is_not_kept_when_its_kit_fails(customer, pro, monkeypatch):
    monkeypatch.setattr(subscriptions, "kit_assign", failing_kit_assign)
    with pytest.raises(RuntimeError):
        subscriptions.subscription_set(customer=customer, plan_key="pro")

    assert not Subscription.objects.filter(customer=customer).exists()
    assert not BillingPeriod.objects.exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"plan_key": "nope"}, "plan_key"),
        ({"status": "happy"}, "status"),
        ({"status": None}, "status"),
        ({"current_period_start": FEB_1, "current_period_end": JAN_1}, "current_period_end"),
        ({"current_period_start": JAN_1, "current_period_end": JAN_1}, "current_period_end"),
        ({"seats": 0}, "seats"),
        ({"seats": -1}, "seats"),
        ({"seats": 2**31}, "seats"),
        ({"seats": True}, "seats"),
        ({"seats": "2"}, "seats"),
        ({"stripe_customer_id": "c" * 256}, "stripe_customer_id"),
    ],
)
def test_subscription_set_refuses_bad_input_and_changes_nothing(customer, pro, free, fields, field):
    subscriptions.subscription_set(
        customer=customer,
        plan_key="free",
        current_period_start=JAN_1,
        current_period_end=FEB_1,
        at=JAN_10,
    )
    before = subscription_state(customer)
    arguments = {"plan_key": "pro", "status": "past_due", "stripe_customer_id": "cus_2"} | fields

    with pytest.raises(InvalidInput) as excinfo:
        subscriptions.subscription_set(customer=customer, at=JAN_20, **arguments)

    assert error_fields(excinfo) == {field}
    assert subscription_state(customer) == before


def test_a_refused_first_subscription_creates_nothing(customer, pro):
    with pytest.raises(InvalidInput):
        subscriptions.subscription_set(
            customer=customer, plan_key="pro", current_period_start=FEB_1, current_period_end=JAN_1
        )
    assert not Subscription.objects.exists()
    assert not BillingPeriod.objects.exists()
    assert customers_selectors.kit_of(customer=customer) is None


# Operator-managed cancellation and reactivation


@pytest.fixture
def started_ten_days_ago(customer, pro) -> BillingPeriod:
    """A live operator-managed subscription; answers its current period."""
    subscriptions.subscription_set(
        customer=customer, plan_key="pro", at=timezone.now() - timedelta(days=10)
    )
    return BillingPeriod.objects.get(customer=customer)


def test_cancel_at_period_end_then_reactivate(customer, started_ten_days_ago):
    period = started_ten_days_ago
    canceling = subscriptions.subscription_cancel_here(customer=customer, when="end")
    assert canceling.cancel_at_period_end
    assert not canceling.ended

    reactivated = subscriptions.subscription_reactivate_here(customer=customer)
    assert not reactivated.cancel_at_period_end
    assert reactivated.status == "active"

    # Past the period's end the scheduler opens the next period instead of ending it.
    assert subscriptions.periods_advance(at=period.end + timedelta(hours=1)) == []
    subscription = Subscription.objects.get(customer=customer)
    assert (subscription.status, subscription.ended_at) == ("active", None)
    assert [p[0] for p in periods(customer)] == [period.start, period.end]


def test_a_pending_cancel_ends_the_subscription_at_its_period_end(customer, started_ten_days_ago):
    period = started_ten_days_ago
    subscriptions.subscription_cancel_here(customer=customer, when="end")

    assert subscriptions.periods_advance(at=period.end + timedelta(hours=1)) == []

    subscription = Subscription.objects.get(customer=customer)
    assert subscription.status == "canceled"
    assert subscription.ended_at == period.end
    assert periods(customer) == [(period.start, period.end, "pro", "cadence", "cancellation")]


def test_cancel_now_ends_the_subscription_and_its_period(customer, pro):
    subscriptions.subscription_set(customer=customer, plan_key="pro", at=JAN_1)

    subscription = subscriptions.subscription_cancel_here(customer=customer, when="now", at=JAN_10)

    assert subscription.status == "canceled"
    assert subscription.ended_at == JAN_10
    assert periods(customer) == [(JAN_1, JAN_10, "pro", "cadence", "cancellation")]


def test_reactivate_refuses_when_nothing_is_pending_or_live(customer, pro):
    with pytest.raises(Conflict):
        subscriptions.subscription_reactivate_here(customer=customer)  # no subscription

    subscriptions.subscription_set(customer=customer, plan_key="pro", at=JAN_1)
    with pytest.raises(Conflict):
        subscriptions.subscription_reactivate_here(customer=customer)  # nothing pending

    subscriptions.subscription_cancel_here(customer=customer, when="now", at=JAN_10)
    before = subscription_state(customer)
    with pytest.raises(Conflict):
        subscriptions.subscription_reactivate_here(customer=customer)  # ended
    assert subscription_state(customer) == before


def test_cancel_refuses_when_nothing_is_live(customer, pro):
    with pytest.raises(Conflict):
        subscriptions.subscription_cancel_here(customer=customer, when="end")
    subscriptions.subscription_set(customer=customer, plan_key="pro", status="canceled")
    with pytest.raises(Conflict):
        subscriptions.subscription_cancel_here(customer=customer, when="now")


# Seats


@pytest.fixture
def subscription(customer, pro):
    return subscriptions.subscription_set(customer=customer, plan_key="pro", seats=2)


def test_seat_operations_add_remove_and_replace(subscription):
    ada, bob, cy = UserFactory(), UserFactory(), UserFactory()

    subscriptions.seats_manage(
        subscription_id=subscription.pk,
        operations=[{"type": "add", "grantee_id": ada.pk}, {"type": "add", "grantee_id": bob.pk}],
    )
    assert holders(subscription.pk) == {ada.pk, bob.pk}

    subscriptions.seats_manage(
        subscription_id=subscription.pk,
        operations=[{"type": "replace", "grantee_id": ada.pk, "new_grantee_id": cy.pk}],
    )
    assert holders(subscription.pk) == {bob.pk, cy.pk}

    subscriptions.seats_manage(
        subscription_id=subscription.pk, operations=[{"type": "remove", "grantee_id": bob.pk}]
    )
    assert holders(subscription.pk) == {cy.pk}


def test_seat_ids_may_come_as_text(subscription):
    ada = UserFactory()
    subscriptions.seats_manage(
        subscription_id=str(subscription.pk),
        operations=[{"type": "add", "grantee_id": str(ada.pk)}],
    )
    assert holders(subscription.pk) == {ada.pk}


@pytest.mark.parametrize(
    "operations",
    [
        pytest.param(["add a", "add b", "add c"], id="past-the-count"),
        pytest.param(["add a", "add a"], id="twice"),
        pytest.param(["remove b"], id="remove-a-non-holder"),
        pytest.param(["replace b c"], id="replace-a-non-holder"),
        pytest.param(["add b", "replace a b"], id="replace-by-a-holder"),
        pytest.param(["remove a", "add b", "add c", "add d"], id="past-the-count-after-a-remove"),
    ],
)
def test_seat_operations_are_all_or_nothing(subscription, operations):
    users = {name: UserFactory() for name in "abcd"}
    subscriptions.seats_manage(
        subscription_id=subscription.pk, operations=[{"type": "add", "grantee_id": users["a"].pk}]
    )
    before = holders(subscription.pk)

    parsed = []
    for operation in operations:
        kind, *names = operation.split()
        parsed.append(
            {"type": kind}
            | dict(
                zip(["grantee_id", "new_grantee_id"], [users[n].pk for n in names], strict=False)
            )
        )
    with pytest.raises(Conflict):
        subscriptions.seats_manage(subscription_id=subscription.pk, operations=parsed)

    assert holders(subscription.pk) == before


@pytest.mark.parametrize(
    ("operation", "field"),
    [
        ({"type": "add", "grantee_id": "nobody"}, "operations.1.grantee_id"),
        ({"type": "add", "grantee_id": None}, "operations.1.grantee_id"),
        ({"type": "add", "grantee_id": "MISSING"}, "operations.1.grantee_id"),
        (
            {"type": "replace", "grantee_id": "ADA", "new_grantee_id": "nobody"},
            "operations.1.new_grantee_id",
        ),
        ({"type": "add", "grantee_id": "INACTIVE"}, "operations.1.grantee_id"),
        ({"type": "swap", "grantee_id": "ADA"}, "operations.1.type"),
    ],
)
def test_an_unknown_grantee_or_operation_names_its_field(subscription, operation, field):
    ada, bob = UserFactory(), UserFactory()
    inactive = UserFactory(is_active=False)
    missing = UserFactory()
    missing_id = missing.pk
    missing.delete()
    names = {"ADA": ada.pk, "INACTIVE": inactive.pk, "MISSING": missing_id}
    operation = {key: names.get(value, value) for key, value in operation.items()}

    with pytest.raises(InvalidInput) as excinfo:
        subscriptions.seats_manage(
            subscription_id=subscription.pk,
            operations=[{"type": "add", "grantee_id": bob.pk}, operation],
        )

    assert error_fields(excinfo) == {field}
    assert holders(subscription.pk) == set()


@pytest.mark.parametrize("subscription_id", ["abc", None, 2**70, -1])
def test_seats_of_an_unknown_subscription_are_not_found(subscription, subscription_id):
    with pytest.raises(NotFound):
        subscriptions.seats_manage(
            subscription_id=subscription_id,
            operations=[{"type": "add", "grantee_id": UserFactory().pk}],
        )
    assert not Seat.objects.exists()


def test_seats_of_an_ended_subscription_are_refused(customer, subscription):
    subscriptions.subscription_set(customer=customer, plan_key="pro", status="canceled")
    with pytest.raises(Conflict):
        subscriptions.seats_manage(
            subscription_id=subscription.pk,
            operations=[{"type": "add", "grantee_id": UserFactory().pk}],
        )
    assert not Seat.objects.exists()


def test_a_per_seat_quota_is_the_limit_times_the_seats_and_follows_them(customer):
    plan_upsert(key="team", name="Team", quotas={"seo": 10, "aeo": 5}, per_seat=["seo"])
    subscriptions.subscription_set(customer=customer, plan_key="team", seats=3)

    entitlement = entitlement_for(customer_id=customer.pk)
    assert (entitlement.limit("seo"), entitlement.limit("aeo")) == (30, 5)
    usage_reserve(customer_id=customer.pk, primitive="seo", quantity=30)
    with pytest.raises(QuotaExceeded):
        usage_reserve(customer_id=customer.pk, primitive="seo")

    # One more seat binds at once, though this process still holds the 3-seat entitlement.
    subscriptions.subscription_set(customer=customer, plan_key="team", seats=4)
    usage_reserve(customer_id=customer.pk, primitive="seo", quantity=10)
    with pytest.raises(QuotaExceeded):
        usage_reserve(customer_id=customer.pk, primitive="seo")
