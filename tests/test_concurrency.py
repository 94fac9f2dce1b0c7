"""The guarantees under real concurrency: parallel requests, each thread on its own
PostgreSQL connection, released together by a barrier. Each scenario runs several rounds
with a fresh customer, so a race that loses one time in a few still shows."""

import pytest
from django.test import Client

from billing_app.catalog import services as catalog
from billing_app.customers import services as customers
from billing_app.models import (
    GaugeEvent,
    GaugeLevel,
    RateCounter,
    Subscription,
    UsageCounter,
    UsageEvent,
)
from billing_app.subscriptions import services as subscriptions

from .factories import CustomerFactory
from .utils import in_parallel, post_json

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

ROUNDS = 5


def metered_customer(quota=None, *, rate=None):
    """A fresh customer on a plan with ``quota`` of seo (None: unlimited), its kit
    allowing seo at ``rate`` calls a minute (None: no rate); and its token."""
    customer = CustomerFactory()
    key = f"plan-{customer.pk}"
    catalog.account_kit_upsert(key=key, name=key, primitives={"seo": rate})
    quotas = {} if quota is None else {"seo": quota}
    catalog.plan_upsert(key=key, name=key, account_kit_id=key, quotas=quotas)
    subscriptions.subscription_set(customer=customer, plan_key=key)
    return customer, customers.tenant_token_issue(customer=customer)[1]


def call_seo(token, path="/demo/seo/", body=None):
    return post_json(Client(), path, body, HTTP_AUTHORIZATION=f"Bearer {token}")


def codes(responses):
    return sorted(
        (r.status_code, r.json().get("error")) if r.status_code != 200 else (200, None)
        for r in responses
    )


@pytest.mark.parametrize(("calls", "quota"), [(50, 10), (200, 1)])
def test_concurrent_calls_never_exceed_the_quota(calls, quota):
    for _ in range(ROUNDS):
        customer, token = metered_customer(quota)

        responses = in_parallel(lambda i: call_seo(token), calls)

        assert codes(responses) == [(200, None)] * quota + [(429, "rate_limited")] * (calls - quota)
        assert UsageEvent.objects.filter(customer_id=customer.pk).count() == quota
        (counter,) = UsageCounter.objects.filter(customer_id=customer.pk)
        assert counter.used == quota


def test_first_calls_of_a_new_window_create_one_counter_row():
    for _ in range(ROUNDS):
        customer, token = metered_customer(1000)

        responses = in_parallel(lambda i: call_seo(token), 50)

        assert [r.status_code for r in responses] == [200] * 50
        assert UsageCounter.objects.filter(customer_id=customer.pk).count() == 1
        assert UsageCounter.objects.get(customer_id=customer.pk).used == 50


def test_failed_calls_under_concurrency_cost_nothing():
    for _ in range(ROUNDS):
        customer, token = metered_customer(10)

        def call(i):
            return call_seo(token, body={"simulate": "error"} if i % 2 else {}).status_code

        statuses = in_parallel(call, 60)

        # A failing call holds a unit while it runs and gives it back: every success
        # counts, and the units of the failures are free again afterwards.
        succeeded = statuses.count(200)
        assert 0 < succeeded <= 10
        assert set(statuses) <= {200, 429, 502}
        assert UsageEvent.objects.filter(customer_id=customer.pk).count() == succeeded
        later = [call_seo(token).status_code for _ in range(11)]
        assert later.count(200) == 10 - succeeded
        assert UsageCounter.objects.get(customer_id=customer.pk).used == 10


# The kit's per-minute rate


def test_concurrent_calls_never_exceed_the_kit_rate(rate_minute):
    for _ in range(ROUNDS):
        customer, token = metered_customer(rate=10)

        responses = in_parallel(lambda i: call_seo(token), 40)

        assert codes(responses) == [(200, None)] * 10 + [(429, "too_many_requests")] * 30
        assert UsageEvent.objects.filter(customer_id=customer.pk).count() == 10
        assert RateCounter.objects.get(customer_id=customer.pk).calls == 10
        # The 11th call of the minute is refused as well; the next minute admits again.
        eleventh = call_seo(token)
        assert (eleventh.status_code, eleventh.json()["error"]) == (429, "too_many_requests")
        assert 1 <= int(eleventh["Retry-After"]) <= max(1, rate_minute.seconds_left())
        rate_minute.advance()
        assert call_seo(token).status_code == 200


def test_calls_refused_by_the_quota_take_no_rate_slot_under_concurrency(rate_minute):
    """Calls too big for the quota race calls that fit: the rate is the kit's 10 calls a
    minute, and only admitted calls count towards it, so all 10 that fit get in."""
    for _ in range(ROUNDS):
        customer, token = metered_customer(100, rate=10)

        def call(i):
            pages = 1 if i % 4 == 0 else 101  # 10 that fit among 40
            return call_seo(token, "/test/seo-pages/", {"pages": pages})

        responses = in_parallel(call, 40)

        fitting = [r for i, r in enumerate(responses) if i % 4 == 0]
        too_big = [r for i, r in enumerate(responses) if i % 4]
        assert [r.status_code for r in fitting] == [200] * 10, codes(fitting)
        assert {r.status_code for r in too_big} == {429}
        assert RateCounter.objects.get(customer_id=customer.pk).calls == 10
        assert UsageCounter.objects.get(customer_id=customer.pk).used == 10


# Gauges: the level's limit, decided on the locked level row


def gauge_customer(limit):
    """A fresh customer on a plan whose storage gauge is limited to ``limit``; an operator
    key to change it through the API."""
    customer = CustomerFactory()
    key = f"gauge-{customer.pk}"
    catalog.plan_upsert(key=key, name=key, gauges={"storage": limit})
    subscriptions.subscription_set(customer=customer, plan_key=key)
    return customer, customers.operator_key_create(name=key)[1]


def change_storage(operator_key, customer, op, amount, key=""):
    body = {"op": op, "amount": amount, **({"idempotencyKey": key} if key else {})}
    return post_json(
        Client(),
        f"/v1/users/{customer.pk}/billing/gauges/storage",
        body,
        HTTP_AUTHORIZATION=f"Bearer {operator_key}",
    )


@pytest.mark.parametrize("keyed", [False, True], ids=["one-statement", "keyed"])
def test_concurrent_gauge_increases_admit_exactly_what_fits(keyed):
    for _ in range(ROUNDS):
        customer, operator_key = gauge_customer(100)

        responses = in_parallel(
            lambda i: change_storage(operator_key, customer, "add", 7, f"k{i}" if keyed else ""),
            40,
        )

        # 14 x 7 = 98 fits in 100, a 15th would not.
        assert codes(responses) == [(201, None)] * 14 + [(429, "rate_limited")] * 26
        levels = sorted(r.json()["level"] for r in responses if r.status_code == 201)
        assert levels == [7 * n for n in range(1, 15)]  # each admitted on the level before it
        assert GaugeLevel.objects.get(customer_id=customer.pk).level == 98
        assert GaugeEvent.objects.filter(customer_id=customer.pk).count() == 14


def test_concurrent_increases_and_decreases_never_pass_the_limit_nor_zero():
    for _ in range(ROUNDS):
        customer, operator_key = gauge_customer(100)
        change_storage(operator_key, customer, "set", 50)

        def change(i):
            return change_storage(operator_key, customer, "add" if i % 2 else "subtract", 30)

        responses = in_parallel(change, 40)

        # Every decrease succeeds; an increase only while it fits.
        decreases = [r for i, r in enumerate(responses) if i % 2 == 0]
        assert {r.status_code for r in decreases} == {201}
        after = GaugeEvent.objects.filter(customer_id=customer.pk).values_list(
            "level_after", flat=True
        )
        assert all(0 <= level <= 100 for level in after)


def test_a_key_sent_concurrently_changes_the_gauge_once():
    for _ in range(ROUNDS):
        customer, operator_key = gauge_customer(1000)

        responses = in_parallel(
            lambda i: change_storage(operator_key, customer, "add", 10, "upload-1"), 20
        )

        assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
        assert {r.json()["level"] for r in responses} == {10}
        assert GaugeEvent.objects.filter(customer_id=customer.pk).count() == 1
        assert GaugeLevel.objects.get(customer_id=customer.pk).level == 10


@pytest.mark.parametrize("how", ["put", "trial"])
def test_a_first_subscription_made_concurrently_is_made_once(operator_key, how):
    """Nothing to lock yet (the subscription does not exist): the customer row is locked."""
    catalog.plan_upsert(key="t", name="T", trial_days=7)
    for _ in range(ROUNDS):
        customer = CustomerFactory()
        url = f"/v1/users/{customer.pk}/billing/subscription"

        def call(i):
            client = Client(HTTP_AUTHORIZATION=f"Bearer {operator_key}")
            if how == "put":
                return client.put(url, {"planKey": "t"}, content_type="application/json")
            return client.post(f"{url}/trial", {"planKey": "t"}, content_type="application/json")

        statuses = sorted(r.status_code for r in in_parallel(call, 10))

        assert statuses == ([200] * 10 if how == "put" else [200] + [409] * 9)
        status = Subscription.objects.get(customer_id=customer.pk).status
        assert status == ("active" if how == "put" else "trialing")
