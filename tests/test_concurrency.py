"""The guarantees under real concurrency: parallel requests, each thread on its own
PostgreSQL connection, released together by a barrier. Each scenario runs several rounds
with a fresh tenant, so a race that loses one time in a few still shows."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.test import Client

from billing_app import services
from billing_app.models import UsageCounter, UsageEvent
from billing_app.testutils import subscribe

from .factories import UserFactory

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

ROUNDS = 5


def in_parallel(calls, count, *, workers=50):
    """Run ``calls(i)`` for i in range(count) on ``workers`` threads released together."""
    barrier = threading.Barrier(min(workers, count))

    def run(i):
        if i < barrier.parties:
            barrier.wait()
        try:
            return calls(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, range(count)))


def metered_tenant(quota):
    tenant = UserFactory()
    subscribe(tenant, quotas={"seo": quota})
    return tenant, services.tenant_token_issue(user=tenant)[1]


def call_seo(token):
    return Client().post("/demo/seo/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code


@pytest.mark.parametrize(("calls", "quota"), [(50, 10), (200, 1)])
def test_concurrent_calls_never_exceed_the_quota(calls, quota):
    for _ in range(ROUNDS):
        tenant, token = metered_tenant(quota)

        statuses = in_parallel(lambda i: call_seo(token), calls)

        assert statuses.count(200) == quota
        assert statuses.count(429) == calls - quota
        assert UsageEvent.objects.filter(user=tenant).count() == quota
        (counter,) = UsageCounter.objects.filter(user=tenant)
        assert counter.used == quota


def test_first_calls_of_a_new_window_create_one_counter_row():
    for _ in range(ROUNDS):
        tenant, token = metered_tenant(1000)

        statuses = in_parallel(lambda i: call_seo(token), 50)

        assert statuses == [200] * 50
        assert UsageCounter.objects.filter(user=tenant).count() == 1
        assert UsageCounter.objects.get(user=tenant).used == 50


def test_concurrent_sends_of_one_idempotency_key_record_one_event(operator_key):
    for round_ in range(ROUNDS):
        tenant, _ = metered_tenant(1000)
        body = {"primitive": "seo", "quantity": 3, "idempotencyKey": f"k-{round_}"}

        def send(i):
            return Client().post(
                f"/v1/users/{tenant.pk}/billing/usage",
                body,
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {operator_key}",
            )

        answers = in_parallel(send, 20)

        assert sorted(a.status_code for a in answers) == [200] * 19 + [201]
        assert {a.json()["event"]["id"] for a in answers} == {
            UsageEvent.objects.get(user=tenant).pk
        }
        assert UsageCounter.objects.get(user=tenant).used == 3


def test_failed_calls_under_concurrency_cost_nothing():
    for _ in range(ROUNDS):
        tenant, token = metered_tenant(10)

        def call(i):
            body = {"simulate": "error"} if i % 2 else {}
            return (
                Client()
                .post(
                    "/demo/seo/",
                    body,
                    content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {token}",
                )
                .status_code
            )

        statuses = in_parallel(call, 60)

        # A failing call holds a slot while it runs and gives it back: every success
        # counts, and the slots of the failures are free again afterwards.
        succeeded = statuses.count(200)
        assert 0 < succeeded <= 10
        assert UsageEvent.objects.filter(user=tenant).count() == succeeded
        later = [call_seo(token) for _ in range(11)]
        assert later.count(200) == 10 - succeeded
        assert UsageCounter.objects.get(user=tenant).used == 10
