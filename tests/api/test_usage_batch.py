"""Batch ingestion of reported usage: ``POST /v1/usage/events``. Each event succeeds or
fails alone, with errors that say what is wrong with it; the good ones land together."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from billing_app.conf import customer_id_json, customer_is_user
from billing_app.models import IdempotencyKey, UsageCounter, UsageEvent
from billing_app.testutils import subscribe

from ..factories import CustomerFactory, UserFactory
from ..utils import absent_customer_id, in_parallel, iso

URL = "/v1/usage/events"

integer_keys_only = pytest.mark.skipif(
    not customer_is_user(), reason="customers are keyed by UUID here"
)
uuid_keys_only = pytest.mark.skipif(customer_is_user(), reason="customers are users here")


def send(api, events):
    return api.post(URL, {"events": events}, format="json")


def event(customer, **fields):
    return {"userId": customer_id_json(customer.pk), "primitive": "seo", **fields}


def test_good_events_land_and_bad_ones_fail_alone_in_order(api, customer):
    events = [
        event(customer, quantity=2, idempotencyKey="a"),
        event(customer, primitive="Not A Slug", quantity=1),
        {"userId": customer_id_json(absent_customer_id()), "primitive": "seo"},
        event(customer, primitive="aeo", quantity=0),
        event(customer, primitive="aeo", timestamp="yesterday"),
        "not an object",
        event(customer, primitive="aeo", quantity=5),
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
    assert "No customer" in results[2]["errors"]["userId"][0]
    assert set(results[3]["errors"]) == {"quantity"}
    assert set(results[4]["errors"]) == {"timestamp"}
    assert set(results[5]["errors"]) == {"event"}
    assert dict(UsageCounter.objects.values_list("primitive", "used")) == {"seo": 2, "aeo": 5}
    assert {results[0]["id"], results[6]["id"]} == set(
        UsageEvent.objects.values_list("id", flat=True)
    )


def kit_without_aeo(customer):
    subscribe(customer, quotas={"seo": 100}, primitives=["seo"])
    return event(customer, primitive="aeo")


@pytest.mark.parametrize(
    ("bad", "field", "says"),
    [
        pytest.param(
            lambda c: event(c, timestamp="2026-13-45T00:00:00Z"), "timestamp", "month", id="month"
        ),
        pytest.param(
            lambda c: event(c, timestamp="2026-02-30T00:00:00Z"), "timestamp", "day", id="feb-30"
        ),
        pytest.param(
            lambda c: event(c, timestamp="2026-01-01T25:00:00Z"), "timestamp", "hour", id="hour"
        ),
        pytest.param(
            lambda c: event(c, timestamp="2026-01-01T00:00:00+99:00"),
            "timestamp",
            "offset",
            id="offset",
        ),
        pytest.param(
            lambda c: event(c, timestamp=iso(timezone.now()).rstrip("Z")),
            "timestamp",
            "time zone",
            id="no-zone",
        ),
        pytest.param(
            lambda c: event(c, timestamp=iso(timezone.now() - timedelta(days=400))),
            "timestamp",
            "older than 35 days is refused",
            id="too-old",
        ),
        pytest.param(
            lambda c: event(c, idempotencyKey="k\x00"), "idempotencyKey", "NUL", id="nul-key"
        ),
        pytest.param(
            lambda c: event(c, idempotencyKey="k" * 256), "idempotencyKey", "255", id="long-key"
        ),
        pytest.param(kit_without_aeo, "primitive", "Account Kit", id="outside-the-kit"),
        pytest.param(
            lambda c: {**event(c), "userId": str(c.pk)},
            "userId",
            "is a string",
            id="string-id-for-an-integer-key",
            marks=integer_keys_only,
        ),
        pytest.param(
            lambda c: {**event(c), "userId": 12},
            "userId",
            "not a customer id (a string)",
            id="number-for-a-uuid-key",
            marks=uuid_keys_only,
        ),
        pytest.param(
            lambda c: {**event(c), "userId": "not-a-uuid"},
            "userId",
            "not a customer id",
            id="malformed-uuid",
            marks=uuid_keys_only,
        ),
    ],
)
def test_a_bad_event_is_its_own_invalid_result_saying_what_is_wrong(
    api, customer, bad, field, says
):
    bad_event = bad(customer)
    good = [event(customer, quantity=2, idempotencyKey="g1"), event(customer, quantity=3)]

    response = send(api, [good[0], bad_event, good[1]])

    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["created", "invalid", "created"]
    assert set(results[1]["errors"]) == {field}
    (message,) = results[1]["errors"][field]
    assert says in message, message
    assert sorted(UsageEvent.objects.values_list("quantity", flat=True)) == [2, 3]
    assert UsageCounter.objects.get(primitive="seo").used == 5
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["g1"]


@integer_keys_only
@pytest.mark.parametrize("user_id", [True, 1.0, "1", None])
def test_a_user_id_must_be_an_integer(api, user_id):
    UserFactory(pk=1)  # so that True == 1 and 1.0 == 1 would name a real customer
    events = [{"userId": user_id, "primitive": "seo"}, {"userId": 1, "primitive": "seo"}]

    results = send(api, events).json()["results"]

    assert [r["status"] for r in results] == ["invalid", "created"]
    assert set(results[0]["errors"]) == {"userId"}
    assert UsageEvent.objects.count() == 1


@uuid_keys_only
def test_uuid_customers_are_named_by_their_id_as_a_string(api):
    first, second = CustomerFactory(), CustomerFactory()
    events = [
        {"userId": str(first.pk), "primitive": "seo", "quantity": 2},
        {"userId": str(second.pk).upper(), "primitive": "seo", "quantity": 3},
        {"userId": first.pk.hex, "primitive": "aeo"},
    ]

    results = send(api, events).json()["results"]

    assert [r["status"] for r in results] == ["created"] * 3
    used = {
        (c, p): u
        for c, p, u in UsageCounter.objects.values_list("customer_id", "primitive", "used")
    }
    assert used == {(first.pk, "seo"): 2, (second.pk, "seo"): 3, (first.pk, "aeo"): 1}


def test_a_key_is_recorded_once_within_and_across_batches(api, customer):
    keyed = event(customer, quantity=3, idempotencyKey="k")
    first = send(api, [keyed, keyed]).json()["results"]
    again = send(api, [keyed, {**keyed, "quantity": 4}]).json()["results"]

    event_id = UsageEvent.objects.get().pk
    assert [(r["status"], r["id"]) for r in first] == [
        ("created", event_id),
        ("duplicate", event_id),
    ]
    assert [r["status"] for r in again] == ["duplicate", "conflict"]
    assert set(again[1]["errors"]) == {"idempotencyKey"}
    assert UsageCounter.objects.get().used == 3


def test_keys_belong_to_one_customer(api, customer):
    other = CustomerFactory()

    results = send(api, [event(customer, idempotencyKey="k"), event(other, idempotencyKey="k")])

    assert [r["status"] for r in results.json()["results"]] == ["created", "created"]
    assert UsageEvent.objects.filter(idempotency_key="k").count() == 2


def test_past_usage_counts_in_its_own_window(api, customer):
    subscription = subscribe(customer, quotas={"seo": 1}, period="day")
    anchor = subscription.billing_cycle_anchor

    results = send(
        api,
        [
            event(customer, quantity=4),  # past the quota: overage, recorded
            event(customer, timestamp=iso(anchor - timedelta(hours=12))),
        ],
    ).json()["results"]

    assert [r["status"] for r in results] == ["created", "created"]
    windows = dict(UsageCounter.objects.values_list("window_start", "used"))
    assert windows == {anchor: 4, anchor - timedelta(days=1): 1}


@pytest.mark.parametrize(
    "body",
    [{}, {"events": []}, {"events": "x"}, {"events": [{}] * 1001}, []],
)
def test_a_batch_that_is_not_a_list_of_1_to_1000_events_is_refused(api, body):
    response = api.post(URL, body, format="json")
    assert response.status_code == 400
    assert "events" in response.json()
    assert not UsageEvent.objects.exists()


@pytest.mark.parametrize(
    "batches",
    [
        [[2**62, 2**62]],  # past the column within the batch
        [[2**63 - 1], [1]],  # past it on top of the counter
        [[2**63 - 2], [1, 1]],
    ],
    ids=["within", "on-top", "on-top-summed"],
)
def test_a_batch_past_the_counters_range_is_refused_and_changes_nothing(api, customer, batches):
    """Each event is below 2^63, their sum is not: nothing of the batch is recorded (on
    SQLite the counter would turn into a float, on PostgreSQL the statement would fail)."""
    subscribe(customer, quotas={"seo": 5})
    *earlier, last = batches
    for quantities in earlier:
        assert send(api, [event(customer, quantity=q) for q in quantities]).status_code == 200
    before = list(UsageCounter.objects.values_list("used", flat=True)), UsageEvent.objects.count()

    response = send(api, [event(customer, quantity=q) for q in last])

    assert response.status_code == 400
    assert response.json() == {"events": ["A counter cannot hold that much more usage."]}
    after = list(UsageCounter.objects.values_list("used", flat=True)), UsageEvent.objects.count()
    assert after == before
    assert all(type(used) is int for used in after[0])


def test_customers_may_not_ingest(customer, customer_client):
    response = customer_client.post(URL, {"events": [event(customer)]}, format="json")

    assert response.status_code == 403
    assert not UsageEvent.objects.exists()


# Concurrent batches that share rows, each in its own order. Batch ingestion writes keys and
# counters in one sorted order whatever the batch's; in the batch's own order two batches
# would each hold a row the other waits for. To make them meet mid-statement, a gate holds
# one row every batch writes until all have piled up behind it, then lets them go.

GATE_SECONDS = 0.5


def send_as(operator_key, events):
    return Client().post(
        URL,
        {"events": events},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {operator_key}",
    )


def behind_a_gate(operator_key, batches, hold):
    """Post ``batches`` at once while ``hold()``, in a transaction on its own connection,
    holds a row they all write; answers their responses."""
    held = threading.Event()

    def run(i):
        if i == 0:
            with transaction.atomic():
                hold()
                held.set()
                time.sleep(GATE_SECONDS)
                transaction.set_rollback(True)
            return None
        held.wait()
        return send_as(operator_key, batches[i - 1])

    return in_parallel(run, len(batches) + 1)[1:]


def in_orders(events, count, seed):
    """``count`` copies of ``events``, each in its own order."""
    orders = []
    for i in range(count):
        batch = list(events)
        random.Random(seed * 100 + i).shuffle(batch)
        orders.append(batch)
    return orders


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_with_the_same_keys_in_other_orders_count_each_event_once(
    operator_key,
):
    """Eight batches of the same 151 keyed events of four customers, each in its own
    order, meet at an uncommitted key: no deadlock, every event recorded once."""
    for round_ in range(3):
        customers = [CustomerFactory() for _ in range(4)]
        gate = customers[0]
        events = [event(gate, quantity=2, idempotencyKey="gate")] + [
            event(c, quantity=2, idempotencyKey=f"e{i}") for i in range(50) for c in customers[1:]
        ]

        def hold(gate=gate):
            IdempotencyKey.objects.create(
                customer_id=gate.pk, key="gate", fingerprint="", created_at=timezone.now()
            )

        responses = behind_a_gate(operator_key, in_orders(events, 8, round_), hold)

        assert [r.status_code for r in responses] == [200] * 8
        statuses = [[r["status"] for r in a.json()["results"]] for a in responses]
        assert sum(s.count("created") for s in statuses) == len(events)
        assert all(set(s) <= {"created", "duplicate"} for s in statuses)
        mine = UsageEvent.objects.filter(customer_id__in=[c.pk for c in customers])
        assert mine.count() == len(events)
        counters = UsageCounter.objects.filter(customer_id__in=[c.pk for c in customers])
        assert sorted(counters.values_list("used", flat=True)) == [2, 100, 100, 100]


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_raising_the_same_counters_in_other_orders_do_not_deadlock(
    operator_key,
):
    """Eight batches of unkeyed events of twenty customers, each in its own order, meet
    at a locked counter: no deadlock, every event counted."""
    for round_ in range(3):
        customers = [CustomerFactory() for _ in range(20)]
        gate = customers[0]
        assert send_as(operator_key, [event(gate)]).status_code == 200  # the gate's counter
        events = [event(c, quantity=3) for c in customers]

        def hold(gate=gate):
            UsageCounter.objects.select_for_update().get(customer_id=gate.pk)

        responses = behind_a_gate(operator_key, in_orders(events, 8, round_), hold)

        assert [r.status_code for r in responses] == [200] * 8
        assert all({r["status"] for r in a.json()["results"]} == {"created"} for a in responses)
        used = dict(
            UsageCounter.objects.filter(customer_id__in=[c.pk for c in customers]).values_list(
                "customer_id", "used"
            )
        )
        assert used == {c.pk: 24 + (c == gate) for c in customers}


def test_a_lone_surrogate_is_a_400_naming_the_event_field_and_changes_nothing(api, customer):
    good = json.dumps(event(customer))
    body = '{"events": [' + good + ", " + good[:-1] + ', "timestamp": "\\ud800"}]}'

    response = api.post(URL, body, content_type="application/json")

    assert response.status_code == 400
    assert set(response.json()) == {"events.1.timestamp"}, response.json()
    assert not UsageEvent.objects.exists()
