import threading

import pytest
from django.db import connection
from django.test import Client

from billing_app.models import UsageCounter, UsageEvent

from ..factories import UserFactory

URL = "/v1/usage/events"


def send(api, events):
    return api.post(URL, {"events": events}, format="json")


def test_good_events_land_and_bad_ones_fail_alone_in_order(api, tenant):
    events = [
        {"userId": tenant.pk, "primitive": "seo", "quantity": 2, "idempotencyKey": "a"},
        {"userId": tenant.pk, "primitive": "Not A Slug", "quantity": 1},
        {"userId": 10**9, "primitive": "seo"},
        {"userId": tenant.pk, "primitive": "aeo", "quantity": 0},
        {"userId": tenant.pk, "primitive": "aeo", "timestamp": "yesterday"},
        "not an object",
        {"userId": tenant.pk, "primitive": "aeo", "quantity": 5},
    ]

    response = send(api, events)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(7))
    assert [r["status"] for r in results] == [
        "created",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "created",
    ]
    assert set(results[1]["errors"]) == {"primitive"}
    assert set(results[2]["errors"]) == {"userId"}
    assert set(results[3]["errors"]) == {"quantity"}
    assert set(results[4]["errors"]) == {"timestamp"}
    assert dict(UsageCounter.objects.values_list("primitive", "used")) == {"seo": 2, "aeo": 5}
    assert {results[0]["id"], results[6]["id"]} == set(
        UsageEvent.objects.values_list("id", flat=True)
    )


@pytest.mark.parametrize("user_id", [True, 1.0, "1", None])
def test_a_user_id_must_be_an_integer(api, user_id):
    UserFactory(pk=1)  # so that True == 1 and 1.0 == 1 would name a real tenant
    events = [{"userId": user_id, "primitive": "seo"}, {"userId": 1, "primitive": "seo"}]

    results = send(api, events).json()["results"]

    assert [r["status"] for r in results] == ["invalid", "created"]
    assert set(results[0]["errors"]) == {"userId"}
    assert UsageEvent.objects.count() == 1


def test_a_key_is_recorded_once_within_and_across_batches(api, tenant):
    event = {"userId": tenant.pk, "primitive": "seo", "quantity": 3, "idempotencyKey": "k"}
    first = send(api, [event, event]).json()["results"]
    again = send(api, [event, {**event, "quantity": 4}]).json()["results"]

    event_id = UsageEvent.objects.get().pk
    assert [(r["status"], r["id"]) for r in first] == [
        ("created", event_id),
        ("duplicate", event_id),
    ]
    assert [r["status"] for r in again] == ["duplicate", "conflict"]
    assert set(again[1]["errors"]) == {"idempotencyKey"}
    assert UsageCounter.objects.get().used == 3


def test_past_usage_counts_in_its_own_window(api, tenant):
    from billing_app.testutils import subscribe

    subscribe(tenant, quotas={"seo": 1}, period="day")
    send(api, [{"userId": tenant.pk, "primitive": "seo", "quantity": 4}])
    yesterday = (UsageCounter.objects.get().window_start.replace(hour=12)).isoformat()
    yesterday = yesterday.replace(yesterday[:10], _day_before(yesterday[:10]))
    send(api, [{"userId": tenant.pk, "primitive": "seo", "timestamp": yesterday}])

    windows = dict(UsageCounter.objects.values_list("window_start__day", "used"))
    assert sorted(windows.values()) == [1, 4]  # overage recorded; two windows


def _day_before(day):
    from datetime import date, timedelta

    return (date.fromisoformat(day) - timedelta(days=1)).isoformat()


@pytest.mark.parametrize(
    "body",
    [{}, {"events": []}, {"events": "x"}, {"events": [{}] * 1001}, []],
)
def test_a_batch_that_is_not_a_list_of_1_to_1000_events_is_refused(api, body):
    response = api.post(URL, body, format="json")
    assert response.status_code == 400
    assert "events" in response.json()
    assert not UsageEvent.objects.exists()


def test_tenants_may_not_ingest(tenant, tenant_token):
    client = Client()
    response = client.post(
        URL,
        {"events": [{"userId": tenant.pk, "primitive": "seo"}]},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {tenant_token}",
    )
    assert response.status_code == 403
    assert not UsageEvent.objects.exists()


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_with_the_same_keys_count_each_event_once(operator_key):
    tenants = [UserFactory() for _ in range(3)]
    events = [
        {"userId": t.pk, "primitive": "seo", "quantity": 2, "idempotencyKey": f"e{i}"}
        for i in range(50)
        for t in tenants
    ]
    barrier = threading.Barrier(8)
    statuses = []

    def post():
        barrier.wait()
        try:
            response = Client().post(
                URL,
                {"events": events},
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {operator_key}",
            )
            statuses.append([r["status"] for r in response.json()["results"]])
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(s.count("created") for s in statuses) == len(events)
    assert UsageEvent.objects.count() == len(events)
    assert sorted(UsageCounter.objects.values_list("used", flat=True)) == [100, 100, 100]
