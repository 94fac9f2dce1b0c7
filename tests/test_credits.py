"""Prepaid credits: grants feed a balance, metered calls draw on it inside the reservation,
a call the balance cannot cover is refused (402 insufficient_credits) exactly as a quota
is, a failed call gets its credits back, grants start, expire and roll over on time. After
every test the autouse ledger check holds: each balance equals the sum of its entries."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from billing_app.catalog.services import plan_upsert
from billing_app.customers.services import tenant_token_issue
from billing_app.exceptions import InsufficientCredits, InvalidInput, QuotaExceeded
from billing_app.metering.credits import balance_of, credits_grant, credits_refresh
from billing_app.metering.services import usage_reserve
from billing_app.models import CreditEntry, CreditGrant
from billing_app.subscriptions.services import periods_advance, subscription_set

from .factories import CustomerFactory
from .utils import in_parallel

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture
def credit_plan(db):
    """seo costs 2 credits a unit; the plan's quota of it is large enough not to matter."""
    return plan_upsert(
        key="developer",
        name="Developer",
        quotas={"seo": 1_000_000},
        credit_costs={"seo": 2},
    )[0]


def on_credits(customer, **fields):
    return subscription_set(customer=customer, plan_key="developer", **fields)


def reserve(customer, quantity=1, **kwargs):
    return usage_reserve(customer_id=customer.pk, primitive="seo", quantity=quantity, **kwargs)


def admitted(customer, count, quantity=1):
    done = 0
    for _ in range(count):
        try:
            reserve(customer, quantity)
            done += 1
        except InsufficientCredits:
            pass
    return done


def test_calls_draw_their_cost_until_the_balance_cannot_cover_one(credit_plan, customer):
    on_credits(customer)
    credits_grant(customer_id=customer.pk, amount=7, source="manual", reason="welcome")

    assert admitted(customer, 5) == 3  # 3 calls x 2 credits; 1 credit left
    assert balance_of(customer_id=customer.pk) == 1
    with pytest.raises(InsufficientCredits) as refused:
        reserve(customer)
    assert (refused.value.balance, refused.value.cost) == (1, 2)
    draws = CreditEntry.objects.filter(customer_id=customer.pk, kind="draw")
    assert sorted(draws.values_list("delta", flat=True)) == [-2, -2, -2]


def test_a_primitive_without_a_credit_cost_draws_nothing(credit_plan, customer):
    on_credits(customer)
    usage_reserve(customer_id=customer.pk, primitive="aeo")
    assert not CreditEntry.objects.filter(kind="draw").exists()


def test_the_refusal_answers_402_insufficient_credits(credit_plan, customer):
    on_credits(customer)
    credits_grant(customer_id=customer.pk, amount=1, source="manual", reason="too few")
    token = tenant_token_issue(customer=customer)[1]

    response = Client().post("/demo/seo/", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 402
    body = response.json()
    assert body["error"] == "insufficient_credits"
    assert body["credits"] == {"balance": 1, "cost": 2}


def test_a_failed_call_gets_its_credits_back(credit_plan, customer):
    on_credits(customer)
    credits_grant(customer_id=customer.pk, amount=10, source="manual", reason="x")
    token = tenant_token_issue(customer=customer)[1]

    response = Client().post(
        "/demo/seo/",
        data='{"simulate": "error"}',
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )

    assert response.status_code == 502
    assert balance_of(customer_id=customer.pk) == 10
    kinds = list(CreditEntry.objects.order_by("pk").values_list("kind", "delta"))
    assert kinds == [("grant", 10), ("draw", -2), ("refund", 2)]


def test_the_quota_refuses_before_credits_are_drawn(customer):
    plan_upsert(key="capped", name="Capped", quotas={"seo": 1}, credit_costs={"seo": 2})
    subscription_set(customer=customer, plan_key="capped")
    credits_grant(customer_id=customer.pk, amount=10, source="manual", reason="x")

    reserve(customer)
    with pytest.raises(QuotaExceeded):
        reserve(customer)
    assert balance_of(customer_id=customer.pk) == 8


def test_grants_are_drawn_by_priority_then_soonest_expiry(credit_plan, customer):
    on_credits(customer)
    now = timezone.now()
    later = credits_grant(
        customer_id=customer.pk, amount=4, source="promotion", expires_at=now + 20 * DAY
    )
    sooner = credits_grant(
        customer_id=customer.pk, amount=4, source="promotion", expires_at=now + 10 * DAY
    )
    first = credits_grant(
        customer_id=customer.pk, amount=2, source="manual", reason="x", priority=1
    )
    admitted(customer, 3)  # 6 credits

    credits_refresh(customer_id=customer.pk)

    remaining = {g.pk: g.remaining for g in CreditGrant.objects.all()}
    assert remaining == {first.pk: 0, sooner.pk: 0, later.pk: 4}


def test_a_grant_counts_only_from_its_start_and_until_its_expiry(credit_plan, customer, clock):
    on_credits(customer)
    now = clock.now
    credits_grant(
        customer_id=customer.pk,
        amount=4,
        source="promotion",
        effective_at=now + DAY,
        expires_at=now + 3 * DAY,
    )
    assert admitted(customer, 1) == 0

    clock.set(now + DAY + timedelta(seconds=1))
    assert admitted(customer, 1) == 1

    clock.set(now + 3 * DAY)
    assert admitted(customer, 1) == 0
    assert balance_of(customer_id=customer.pk) == 0
    assert CreditEntry.objects.filter(kind="expiry").get().delta == -2


def test_plan_credits_each_period_expire_and_roll_over_up_to_the_cap(customer, clock):
    plan_upsert(
        key="monthly-credits",
        name="Monthly credits",
        credit_costs={"seo": 1},
        credits={"per_period": 100, "rollover_cap": 30, "rollover_days": 10},
    )
    start = clock.now
    subscription_set(
        customer=customer,
        plan_key="monthly-credits",
        current_period_start=start,
        current_period_end=start + 30 * DAY,
        at=start,
    )
    assert admitted(customer, 60) == 60  # 40 left of the period's 100

    clock.set(start + 30 * DAY + timedelta(seconds=1))
    periods_advance(at=clock.now)
    credits_refresh(customer_id=customer.pk)

    # 40 left: 30 roll over (the cap), 10 expire; the new period brings 100 more.
    assert balance_of(customer_id=customer.pk) == 130
    rollover = CreditGrant.objects.get(source="rollover")
    assert (rollover.amount, rollover.expires_at) == (30, start + 40 * DAY)
    # The rolled-over credits expire first, so they are drawn first.
    admitted(customer, 30)
    clock.set(start + 41 * DAY)
    credits_refresh(customer_id=customer.pk)
    assert balance_of(customer_id=customer.pk) == 100


def test_a_grant_with_a_source_reference_is_made_once(credit_plan, customer):
    on_credits(customer)
    for _ in range(3):
        credits_grant(customer_id=customer.pk, amount=50, source="purchase", source_ref="cs_1")

    assert balance_of(customer_id=customer.pk) == 50
    assert CreditGrant.objects.count() == 1


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"amount": 0, "source": "manual", "reason": "x"}, "amount"),
        ({"amount": True, "source": "manual", "reason": "x"}, "amount"),
        ({"amount": 5, "source": "gift", "reason": "x"}, "source"),
        ({"amount": 5, "source": "manual", "reason": " "}, "reason"),
        ({"amount": 5, "source": "promotion", "priority": -1}, "priority"),
    ],
)
def test_a_bad_grant_names_its_field_and_changes_nothing(customer, fields, field):
    with pytest.raises(InvalidInput) as refused:
        credits_grant(customer_id=customer.pk, **fields)
    assert field in refused.value.fields
    assert not CreditGrant.objects.exists()


MAX = 2**63 - 1


def test_grants_stop_where_the_balance_column_does(credit_plan, customer):
    """Each grant is below 2^63, their sum may not be: the grant past it is refused (the
    balance and what is granted would not fit their columns), the ones before it stand."""
    on_credits(customer)
    credits_grant(customer_id=customer.pk, amount=MAX - 5, source="manual", reason="a lot")

    with pytest.raises(InvalidInput) as refused:
        credits_grant(customer_id=customer.pk, amount=6, source="promotion")

    assert "amount" in refused.value.fields
    credits_grant(customer_id=customer.pk, amount=5, source="promotion")
    assert balance_of(customer_id=customer.pk) == MAX
    assert CreditGrant.objects.count() == 2


def test_the_plans_credits_of_a_period_fill_what_the_balance_can_still_hold(customer):
    plan_upsert(key="huge", name="Huge", credit_costs={"seo": 1}, credits={"per_period": MAX - 1})
    credits_grant(customer_id=customer.pk, amount=10, source="manual", reason="before")

    subscription_set(customer=customer, plan_key="huge")
    credits_refresh(customer_id=customer.pk)

    assert balance_of(customer_id=customer.pk) == MAX
    assert CreditGrant.objects.get(source="plan").amount == MAX - 10


def test_a_call_costing_more_than_any_balance_is_refused_for_want_of_credits(customer, api):
    plan_upsert(key="dear", name="Dear", credit_costs={"seo": 2**62})
    subscription_set(customer=customer, plan_key="dear")
    credits_grant(customer_id=customer.pk, amount=MAX, source="manual", reason="all of it")

    with pytest.raises(InsufficientCredits) as refused:
        reserve(customer, quantity=2)
    response = api.post(
        f"/v1/users/{customer.pk}/billing/usage", {"primitive": "seo", "quantity": 3}, "json"
    )

    assert (refused.value.balance, refused.value.cost) == (MAX, 2**63)
    assert response.status_code == 402
    assert response.json()["credits"] == {"balance": MAX, "cost": 3 * 2**62}
    assert balance_of(customer_id=customer.pk) == MAX
    assert not CreditEntry.objects.filter(kind="draw").exists()


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("rate", [None, 1000])
def test_concurrent_calls_admit_exactly_what_the_balance_covers(rate):
    """N calls against a balance of B credits at a cost of c admit exactly floor(B / c),
    in every round, with and without a per-minute rate limiting the primitive too."""
    kit = {"seo": rate} if rate else None
    if kit:
        from billing_app.catalog.services import account_kit_upsert

        account_kit_upsert(key="kit-credits", name="Kit", primitives=kit)
    plan_upsert(
        key="developer",
        name="Developer",
        account_kit_id="kit-credits" if kit else None,
        quotas={"seo": 1_000_000},
        credit_costs={"seo": 3},
    )
    for _ in range(4):
        customer = CustomerFactory()
        subscription_set(customer=customer, plan_key="developer")
        credits_grant(customer_id=customer.pk, amount=50, source="manual", reason="x")

        def call(i, customer=customer):
            try:
                reserve(customer)
            except InsufficientCredits:
                return False
            return True

        results = in_parallel(call, 40)

        assert results.count(True) == 16  # floor(50 / 3)
        assert balance_of(customer_id=customer.pk) == 2


def test_a_draw_that_takes_the_balance_low_alerts_once_per_threshold(
    credit_plan, customer, django_capture_on_commit_callbacks
):
    from billing_app.signals import credit_balance_low

    on_credits(customer)
    credits_grant(customer_id=customer.pk, amount=10, source="manual", reason="x")
    sent = []

    def receive(sender, customer, threshold, balance, granted, **kwargs):
        sent.append((threshold, balance, granted))

    credit_balance_low.connect(receive)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            admitted(customer, 6)  # 10 -> 8 -> 6 -> 4 -> 2 -> 0, then refused
    finally:
        credit_balance_low.disconnect(receive)

    assert sent == [(0.2, 2, 10), (0.0, 0, 10)]
