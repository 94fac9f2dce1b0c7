"""The spend cap on billed overage: past a quota that bills overage, calls go on while
the window's overage spend stays within the plan's cap, and are refused as past a quota
beyond it, decided in the reservation itself (exact under concurrency on PostgreSQL). A
refused call writes nothing; a failed call gives its share of the spend back."""

from datetime import timedelta
from decimal import Decimal

import pytest

from billing_app.catalog.services import plan_upsert
from billing_app.customers.services import tenant_token_issue
from billing_app.exceptions import InsufficientCredits, QuotaExceeded, SpendCapReached
from billing_app.metering.credits import balance_of, credits_grant
from billing_app.metering.ledger import spent_in
from billing_app.metering.services import usage_record, usage_refund, usage_reserve
from billing_app.models import OverageSpend, UsageCounter, UsageEvent
from billing_app.subscriptions.services import subscription_set

from .factories import CustomerFactory
from .utils import assert_field_error, in_parallel, json_id, window_now

pytestmark = pytest.mark.django_db


@pytest.fixture
def capped(db):
    """seo: 10 a window, then 2.5 minor units each; aeo: 4, then 1 each; email.send blocks
    at 3. At most 10 minor units of overage a window."""
    return plan_upsert(
        key="capped",
        name="Capped",
        quotas={"seo": 10, "aeo": 4, "email.send": 3},
        overage={"seo": "2.5", "aeo": "1"},
        overage_spend_cap="10",
    )[0]


def on_capped(customer):
    return subscription_set(customer=customer, plan_key="capped")


def call(customer, primitive="seo", quantity=1, **kwargs):
    return usage_reserve(customer_id=customer.pk, primitive=primitive, quantity=quantity, **kwargs)


def state(customer):
    return (
        dict(UsageCounter.objects.filter(customer_id=customer.pk).values_list("primitive", "used")),
        UsageEvent.objects.filter(customer_id=customer.pk).count(),
        spent_in(customer_id=customer.pk, window=window_now(customer)),
    )


def test_overage_goes_on_until_the_cap_then_calls_are_refused(capped, customer):
    on_capped(customer)
    for _ in range(10):
        call(customer)  # within the quota: no spend
    assert spent_in(customer_id=customer.pk, window=window_now(customer)) == 0
    for _ in range(4):
        call(customer)  # 4 x 2.5 = 10: the cap, reached exactly
    before = state(customer)

    with pytest.raises(SpendCapReached) as refused:
        call(customer)

    error = refused.value
    assert isinstance(error, QuotaExceeded)  # refused as a quota is
    assert (error.code, error.spent, error.cap) == ("spend_cap_reached", Decimal(10), Decimal(10))
    assert (error.used, error.limit, error.resets_at) == (14, 10, window_now(customer).end)
    assert state(customer) == before  # a refusal writes nothing
    # The cap is on overage: aeo within its quota goes on, past it (1 more) it is refused.
    for _ in range(4):
        call(customer, "aeo")
    with pytest.raises(SpendCapReached):
        call(customer, "aeo")
    # A blocking quota is a quota as before.
    for _ in range(3):
        call(customer, "email.send")
    with pytest.raises(QuotaExceeded) as blocked:
        call(customer, "email.send")
    assert type(blocked.value) is QuotaExceeded


def test_a_call_across_the_quota_pays_only_its_units_past_it(capped, customer):
    on_capped(customer)
    call(customer, quantity=9)
    reservation = call(customer, quantity=3)  # 1 within the quota, 2 past it: 5
    assert reservation.spent == Decimal(5)
    assert spent_in(customer_id=customer.pk, window=window_now(customer)) == 5
    with pytest.raises(SpendCapReached):
        call(customer, quantity=3)  # 7.5 more would make 12.5
    call(customer, quantity=2)  # 5 more: 10
    assert state(customer)[0]["seo"] == 14


def test_a_failed_call_gives_its_spend_back(capped, customer):
    on_capped(customer)
    call(customer, quantity=10)
    kept = call(customer, quantity=2)
    failed = call(customer, quantity=2)
    assert spent_in(customer_id=customer.pk, window=window_now(customer)) == 10

    usage_refund(reservation=failed)

    assert spent_in(customer_id=customer.pk, window=window_now(customer)) == 5
    assert kept.spent == 5
    call(customer, quantity=2)  # room again


def test_usage_reported_without_enforcement_counts_but_is_never_refused(capped, customer):
    on_capped(customer)
    usage_record(customer_id=customer.pk, primitive="seo", quantity=20, enforce=False)
    # 10 past the quota at 2.5: 25, past the cap, and recorded all the same.
    assert spent_in(customer_id=customer.pk, window=window_now(customer)) == 25
    with pytest.raises(SpendCapReached):
        call(customer)


def test_a_keyed_report_counts_once_and_is_refused_past_the_cap(capped, customer):
    on_capped(customer)
    call(customer, quantity=10)
    for _ in range(2):
        usage_record(customer_id=customer.pk, primitive="seo", quantity=4, idempotency_key="k1")
    assert spent_in(customer_id=customer.pk, window=window_now(customer)) == 10
    before = state(customer)
    with pytest.raises(SpendCapReached):
        usage_record(customer_id=customer.pk, primitive="seo", idempotency_key="k2")
    assert state(customer) == before


def test_the_next_window_starts_from_no_spend(capped, customer, clock):
    on_capped(customer)
    call(customer, quantity=14)
    with pytest.raises(SpendCapReached):
        call(customer)
    clock.set(window_now(customer).end + timedelta(seconds=1))

    call(customer, quantity=14)

    assert OverageSpend.objects.filter(customer_id=customer.pk).count() == 2


def test_a_new_cap_binds_at_once(capped, customer):
    on_capped(customer)
    call(customer, quantity=14)
    with pytest.raises(SpendCapReached):
        call(customer)

    plan_upsert(key="capped", name="Capped", overage_spend_cap="12.5")
    call(customer)
    plan_upsert(key="capped", name="Capped", overage_spend_cap=None)
    call(customer, quantity=100)  # no cap: overage goes on


def test_the_cap_and_credits_refuse_each_for_its_own_reason(customer):
    plan_upsert(
        key="capped",
        name="Capped",
        quotas={"seo": 2},
        overage={"seo": "1"},
        overage_spend_cap="1",
        credit_costs={"seo": 5},
    )
    on_capped(customer)
    credits_grant(customer_id=customer.pk, amount=15, source="manual", reason="x")
    call(customer, quantity=3)  # 15 credits, 1 past the quota: the cap reached
    with pytest.raises(SpendCapReached):
        call(customer)
    assert balance_of(customer_id=customer.pk) == 0
    plan_upsert(key="capped", name="Capped", overage_spend_cap="5")
    with pytest.raises(InsufficientCredits):
        call(customer)
    assert spent_in(customer_id=customer.pk, window=window_now(customer)) == 1


def test_the_refusal_over_http(capped, customer, client, settings):
    on_capped(customer)
    token = tenant_token_issue(customer=customer)[1]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    call(customer, quantity=14)

    response = client.post("/demo/seo/", **auth)

    assert response.status_code == 429
    body = response.json()
    assert body["error"] == "spend_cap_reached"
    assert body["spend"] == {"spent": "10", "cap": "10"}
    assert body["usage"] == {"current": 14, "limit": 10}
    assert int(response["Retry-After"]) >= 1
    settings.BILLING_QUOTA_EXCEEDED_STATUS = 402
    response = client.post("/demo/seo/", **auth)
    assert (response.status_code, response.json()["error"]) == (402, "spend_cap_reached")


def test_the_cap_over_the_api(api):
    body = {"key": "capped", "name": "Capped", "quotas": {"seo": 5}, "overage": {"seo": "0.5"}}
    created = api.post("/v1/plans", {**body, "overageSpendCap": "2500.5"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["overageSpendCap"] == "2500.5"
    for bad in ("-1", "abc", "1e13", "0.0000000000001"):
        response = api.post("/v1/plans", {**body, "overageSpendCap": bad}, format="json")
        assert_field_error(response, "overageSpendCap")
    listed = api.get("/v1/plans").json()
    (plan,) = [p for p in (listed if isinstance(listed, list) else listed["plans"])]
    assert plan["overageSpendCap"] == "2500.5"


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("keyed", [False, True])
def test_concurrent_calls_past_the_quota_admit_exactly_what_the_cap_covers(keyed):
    """With the quota used up, N calls at price p against a cap C admit exactly
    floor(C / p), in every round, in one statement and in a transaction (keyed)."""
    plan_upsert(
        key="capped",
        name="Capped",
        quotas={"seo": 5},
        overage={"seo": "3"},
        overage_spend_cap="50",
    )
    for _ in range(4):
        customer = CustomerFactory()
        on_capped(customer)
        call(customer, quantity=5)

        def attempt(i, customer=customer):
            try:
                if keyed:
                    usage_record(customer_id=customer.pk, primitive="seo", idempotency_key=f"k{i}")
                else:
                    call(customer)
            except SpendCapReached:
                return False
            return True

        results = in_parallel(attempt, 40)

        assert results.count(True) == 16  # floor(50 / 3)
        assert spent_in(customer_id=customer.pk, window=window_now(customer)) == 48
        assert UsageCounter.objects.get(customer_id=customer.pk).used == 21
        assert UsageEvent.objects.filter(customer_id=customer.pk).count() == 1 + 16


def test_the_check_answers_what_a_call_would_get(capped, customer):
    on_capped(customer)
    call(customer, quantity=13)  # 7.5 spent

    def check(quantity):
        from billing_app.metering.services import usage_check

        return usage_check(customer_id=customer.pk, primitive="seo", quantity=quantity)

    assert (check(1).allowed, check(1).reason) == (True, None)
    assert (check(2).allowed, check(2).reason) == (False, "spend_cap_reached")
    call(customer)
    assert check(1).reason == "spend_cap_reached"


def test_usage_reported_in_batches_counts_once(capped, customer, api):
    on_capped(customer)
    call(customer, quantity=9)
    who = json_id(customer.pk)
    events = [
        {"userId": who, "primitive": "seo", "quantity": 2, "idempotencyKey": "b1"},
        {"userId": who, "primitive": "aeo", "quantity": 5},
        {"userId": who, "primitive": "email.send", "quantity": 9},  # blocking: no price
    ]

    first = api.post("/v1/usage/events", {"events": events}, format="json")
    again = api.post("/v1/usage/events", {"events": events[:1]}, format="json")

    assert first.status_code < 300 and again.status_code < 300, (first.content, again.content)
    assert again.json()["results"][0]["status"] == "duplicate"  # counted once
    # seo: 1 of the 2 past its 10 (2.5); aeo: 1 of the 5 past its 4 (1).
    assert spent_in(customer_id=customer.pk, window=window_now(customer)) == Decimal("3.5")
    call(customer, quantity=2)  # 5 more: 8.5
    with pytest.raises(SpendCapReached):
        call(customer)  # 2.5 more would make 11
