"""Gauges: levels that go up and down (storage in bytes), limited by the plan. An increase
past the limit is refused by the database against the entitlement's version; a decrease
always succeeds and stops at zero; every change is an event, and the autouse check in
conftest rebuilds every level from its events after each test."""

from __future__ import annotations

import pytest
from django.test import override_settings

from billing_app.catalog import services as catalog
from billing_app.client import billing
from billing_app.customers import services as customers
from billing_app.cycles import services as closer
from billing_app.cycles.selectors import level_over_time, record_current
from billing_app.exceptions import (
    Conflict,
    InvalidInput,
    PrimitiveNotAllowed,
    QuotaExceeded,
    SubscriptionInactive,
)
from billing_app.metering import services as metering
from billing_app.models import GaugeEvent, GaugeLevel, OutboxMessage
from billing_app.subscriptions import services as subscriptions

from .utils import at, bearer, post_json

pytestmark = pytest.mark.django_db

GB = 10**9


def storage_plan(key="storage", limit=100, **fields):
    return catalog.plan_upsert(key=key, name=key, gauges={"storage": limit}, **fields)[0]


def on_plan(customer, key="storage", limit=100, **fields):
    storage_plan(key, limit, **fields)
    subscriptions.subscription_set(customer=customer, plan_key=key)
    return billing.for_customer(customer).gauge("storage")


def events(customer):
    return list(
        GaugeEvent.objects.filter(customer_id=customer.pk)
        .order_by("id")
        .values_list("op", "amount", "delta", "level_after")
    )


# The level


def test_add_subtract_and_set_move_the_level_and_each_change_is_an_event(customer):
    gauge = on_plan(customer)

    assert gauge.add(60).level == 60
    assert gauge.subtract(25).level == 35
    assert gauge.set(90).level == 90
    assert gauge.set(10).level == 10

    assert gauge.level() == 10
    assert events(customer) == [
        ("add", 60, 60, 60),
        ("subtract", 25, -25, 35),
        ("set", 90, 55, 90),
        ("set", 10, -80, 10),
    ]


def test_an_increase_past_the_limit_is_refused_and_changes_nothing(customer):
    gauge = on_plan(customer, limit=100)
    gauge.add(70)

    with pytest.raises(QuotaExceeded) as refused:
        gauge.add(31)
    assert (refused.value.primitive, refused.value.limit, refused.value.used) == (
        "storage",
        100,
        70,
    )
    assert refused.value.resets_at is None  # a level has no window to wait for
    with pytest.raises(QuotaExceeded):
        gauge.set(101)

    assert gauge.level() == 70
    assert len(events(customer)) == 1
    # What fits exactly is admitted.
    assert gauge.add(30).level == 100
    assert gauge.set(100).level == 100


def test_a_decrease_always_succeeds_and_never_goes_below_zero(customer):
    gauge = on_plan(customer, limit=100)
    gauge.add(80)
    catalog.plan_upsert(key="storage", name="storage", gauges={"storage": 10})  # lowered

    # Above the new limit: lowering is allowed, raising is not, even to below the old level.
    assert gauge.set(50).level == 50
    assert gauge.subtract(5).level == 45
    with pytest.raises(QuotaExceeded):
        gauge.add(1)
    assert gauge.subtract(1000).level == 0
    assert gauge.subtract(1).level == 0
    assert [e[2] for e in events(customer)] == [80, -30, -5, -45]  # no event for a no-op


def test_an_unkeyed_change_that_changes_nothing_writes_no_event_a_keyed_one_does(customer):
    gauge = on_plan(customer)
    gauge.subtract(5)
    gauge.set(0)
    assert events(customer) == []
    assert GaugeLevel.objects.get(customer_id=customer.pk).level == 0

    gauge.set(0, idempotency_key="sync-1")
    assert events(customer) == [("set", 0, 0, 0)]


def test_a_lower_limit_binds_the_next_change_even_from_a_cached_entitlement(customer):
    gauge = on_plan(customer, limit=100)
    gauge.add(50)  # caches the entitlement in this process

    catalog.plan_upsert(key="storage", name="storage", gauges={"storage": 60})

    with pytest.raises(QuotaExceeded) as refused:
        gauge.add(20)
    assert refused.value.limit == 60
    assert gauge.add(10).level == 60


def test_without_a_subscription_a_gauge_is_unlimited(customer):
    gauge = billing.for_customer(customer).gauge("storage")
    assert gauge.add(10**15).level == 10**15
    assert gauge.state().limit is None


def test_a_per_seat_limit_grows_with_the_seats(customer):
    storage_plan(limit=10, per_seat=["storage"])
    subscriptions.subscription_set(customer=customer, plan_key="storage", seats=3)
    gauge = billing.for_customer(customer).gauge("storage")

    assert gauge.add(30).level == 30
    with pytest.raises(QuotaExceeded):
        gauge.add(1)


def test_a_billed_gauge_goes_past_its_limit(customer):
    gauge = on_plan(customer, limit=10, overage={"storage": "0.001"})
    assert gauge.add(25).level == 25
    assert gauge.state().limit == 10


def test_an_inactive_subscription_refuses_increases_but_not_decreases(customer):
    gauge = on_plan(customer)
    gauge.add(40)
    subscriptions.subscription_set(customer=customer, plan_key="storage", status="unpaid")

    with pytest.raises(SubscriptionInactive):
        gauge.add(1)
    with pytest.raises(SubscriptionInactive):
        gauge.set(41)
    assert gauge.set(30).level == 30
    assert gauge.subtract(10).level == 20


def test_a_gauge_outside_the_kit_may_only_go_down(customer):
    gauge = on_plan(customer)
    gauge.add(5)
    catalog.account_kit_upsert(key="k", name="k", primitives={"api.calls": None})
    customers.kit_assign(customer=customer, kit=catalog.account_kit_get(ref="k"))

    with pytest.raises(PrimitiveNotAllowed):
        gauge.add(1)
    assert gauge.subtract(2).level == 3


def test_a_gauge_is_not_counted_and_a_counter_is_not_a_gauge(customer):
    storage_plan(quotas={"api.calls": 5})
    subscriptions.subscription_set(customer=customer, plan_key="storage")

    with pytest.raises(InvalidInput) as refused:
        metering.usage_record(customer_id=customer.pk, primitive="storage")
    assert set(refused.value.fields) == {"primitive"}
    with pytest.raises(InvalidInput) as refused:
        billing.for_customer(customer).gauge("api.calls").add(1)
    assert set(refused.value.fields) == {"primitive"}
    assert not GaugeEvent.objects.exists()


@pytest.mark.parametrize(
    ("op", "amount", "field"),
    [
        ("grow", 1, "op"),
        ("add", 0, "amount"),
        ("subtract", -1, "amount"),
        ("set", -1, "amount"),
        ("add", 2**63, "amount"),
        ("add", True, "amount"),
        ("add", 1.5, "amount"),
    ],
)
def test_bad_changes_name_their_field_and_change_nothing(customer, op, amount, field):
    on_plan(customer)
    with pytest.raises(InvalidInput) as refused:
        metering.gauge_change(customer_id=customer.pk, primitive="storage", op=op, amount=amount)
    assert set(refused.value.fields) == {field}
    assert not GaugeLevel.objects.exists()


# Idempotency


def test_a_key_makes_its_change_once_and_answers_it_again(customer):
    gauge = on_plan(customer, limit=100)
    first = gauge.add(100, idempotency_key="upload-1")

    again = gauge.add(100, idempotency_key="upload-1")  # the gauge is full: still answered

    assert (again.duplicate, again.level, again.delta, again.event_id) == (
        True,
        100,
        100,
        first.event_id,
    )
    assert gauge.level() == 100
    with pytest.raises(Conflict):
        gauge.add(50, idempotency_key="upload-1")
    with pytest.raises(Conflict):
        billing.for_customer(customer).gauge("files").add(100, idempotency_key="upload-1")
    assert len(events(customer)) == 1


def test_a_refused_keyed_change_can_be_retried_with_its_key(customer):
    gauge = on_plan(customer, limit=10)
    gauge.add(10)
    with pytest.raises(QuotaExceeded):
        gauge.add(5, idempotency_key="k")
    gauge.subtract(10)
    assert gauge.add(5, idempotency_key="k").duplicate is False
    assert gauge.level() == 5


def test_events_keep_time_order_when_the_clock_goes_back(customer, clock):
    gauge = on_plan(customer)
    clock.set("2026-04-02 10:00")
    gauge.add(1)
    clock.set("2026-04-02 09:59")  # another process's clock, a little behind

    later = gauge.add(1)

    assert later.changed_at == at("2026-04-02 10:00")
    assert (
        list(
            GaugeEvent.objects.filter(customer_id=customer.pk)
            .order_by("id")
            .values_list("occurred_at", flat=True)
        )
        == [at("2026-04-02 10:00")] * 2
    )


# The operator API


def gauge_url(customer, primitive="storage"):
    return f"/v1/users/{customer.pk}/billing/gauges/{primitive}"


def test_the_api_changes_a_gauge_once_per_key(api, customer):
    on_plan(customer, limit=100)

    response = api.post(
        gauge_url(customer), {"op": "add", "amount": 60}, format="json", HTTP_IDEMPOTENCY_KEY="u1"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body == {
        "primitive": "storage",
        "level": 60,
        "limit": 100,
        "op": "add",
        "amount": 60,
        "delta": 60,
        "changedAt": body["changedAt"],
        "idempotencyKey": "u1",
        "duplicate": False,
    }
    again = api.post(
        gauge_url(customer), {"op": "add", "amount": 60}, format="json", HTTP_IDEMPOTENCY_KEY="u1"
    )
    assert again.status_code == 200
    assert {**again.json(), "duplicate": False} == body
    assert api.get(gauge_url(customer)).json() == {
        "primitive": "storage",
        "level": 60,
        "limit": 100,
    }


@pytest.mark.parametrize(
    ("configured", "status", "error"),
    [(429, 429, "rate_limited"), (402, 402, "usage_limit_exceeded")],
)
def test_the_api_refuses_an_increase_past_the_limit(api, customer, configured, status, error):
    on_plan(customer, limit=100)
    api.post(gauge_url(customer), {"op": "set", "amount": 90}, format="json")

    with override_settings(BILLING_QUOTA_EXCEEDED_STATUS=configured):
        response = api.post(gauge_url(customer), {"op": "add", "amount": 11}, format="json")

    assert response.status_code == status
    body = response.json()
    assert body == {
        "error": error,
        "message": body["message"],
        "primitive": "storage",
        "usage": {"current": 90, "limit": 100},
    }
    assert "Retry-After" not in response  # waiting frees nothing: only a decrease does
    assert (
        api.post(gauge_url(customer), {"op": "subtract", "amount": 95}, format="json").json()[
            "level"
        ]
        == 0
    )


@pytest.mark.parametrize(
    ("primitive", "body", "field"),
    [
        ("storage", {"op": "grow", "amount": 1}, "op"),
        ("storage", {"op": "add"}, "amount"),
        ("storage", {"op": "add", "amount": -1}, "amount"),
        ("storage", {"op": "add", "amount": 1.5}, "amount"),
        ("storage", {"op": "add", "amount": 0}, "amount"),
        ("storage", {"op": "add", "amount": 1, "idempotencyKey": "x" * 256}, "idempotencyKey"),
        ("Storage", {"op": "add", "amount": 1}, "primitive"),
    ],
)
def test_the_api_names_a_bad_field_and_changes_nothing(api, customer, primitive, body, field):
    on_plan(customer)
    response = api.post(gauge_url(customer, primitive), body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not GaugeLevel.objects.exists()


def test_the_gauge_api_is_for_operators_and_known_customers(customer, customer_token, api):
    on_plan(customer)
    tenant = post_json(bearer(customer_token), gauge_url(customer), {"op": "add", "amount": 1})
    assert tenant.status_code == 403
    missing = api.post(
        f"/v1/users/{10**12}/billing/gauges/storage", {"op": "add", "amount": 1}, format="json"
    )
    assert missing.status_code == 404
    assert not GaugeLevel.objects.exists()


# What is shown


def test_usage_shows_gauges_as_enforced(api, customer, customer_client):
    gauge = on_plan(customer, limit=100, quotas={"api.calls": 5})
    gauge.add(42)
    metering.usage_record(customer_id=customer.pk, primitive="api.calls", quantity=2)

    operator = api.get(f"/v1/users/{customer.pk}/billing/usage").json()
    assert operator["quotas"] == {"api.calls": 5}
    assert operator["usage"] == {"api.calls": 2}
    assert operator["gauges"] == {"storage": {"level": 42, "limit": 100}}

    own = customer_client.get("/billing/usage").json()
    assert own["usage"] == {"apiCalls": 2, "apiCallsLimit": 5, "storage": 42, "storageLimit": 100}
    assert billing.for_customer(customer).usage().levels == {"storage": 42}


def test_check_answers_a_gauges_level_and_room(api, customer):
    on_plan(customer, limit=100).add(90)
    url = f"/v1/users/{customer.pk}/billing/check?primitive=storage"

    fits = api.get(url + "&quantity=10").json()
    too_much = api.get(url + "&quantity=11").json()

    assert fits == {
        "allowed": True,
        "reason": None,
        "limit": 100,
        "used": 90,
        "remaining": 10,
        "resetsAt": None,
    }
    assert (too_much["allowed"], too_much["reason"]) == (False, "rate_limited")
    assert GaugeEvent.objects.count() == 1  # checking changed nothing


def test_the_admin_subscription_page_shows_the_gauge(admin_client, customer):
    on_plan(customer, limit=100).add(42)
    subscription = customer.billing_subscription

    page = admin_client.get(f"/admin/billing_app/subscription/{subscription.pk}/change/")

    assert page.status_code == 200
    text = page.content.decode()
    assert "Gauges" in text
    assert "<td>storage</td><td>42 / 100</td>" in text
    assert GaugeEvent.objects.count() == 1  # reading wrote nothing


# Billing a level over time: the worked example of docs/howto/gauges.md


def test_a_period_record_holds_the_peak_and_the_time_weighted_average(customer, clock, api):
    """April 2026 (30 days, 720 hours). Storage holds 2 GB on April 1, 10 GB from the
    11th, 16 GB from the 21st and 8 GB from the 26th; the plan includes 10 GB and bills
    2.3 cents per GB-month (0.0000000023 cents per byte-month) beyond. 5,760 GB-hours, an
    average of 8 GB, a peak of 16 GB; 6 GB over for 120 hours is 1 GB-month over: 2.3
    cents."""
    storage_plan(limit=10 * GB, overage={"storage": "0.0000000023"})
    gauge = billing.for_customer(customer).gauge("storage")
    clock.set("2026-03-20 00:00")
    gauge.add(2 * GB)  # before the subscription: no limit, and it carries over
    clock.set("2026-04-01 00:00")
    subscriptions.subscription_set(
        customer=customer,
        plan_key="storage",
        stripe_customer_id="cus_gauge",
        current_period_start=at("2026-04-01 00:00"),
        current_period_end=at("2026-05-01 00:00"),
    )
    clock.set("2026-04-11 00:00")
    gauge.add(8 * GB)
    clock.set("2026-04-16 00:00")
    current = record_current(customer=customer)
    assert current is not None
    assert current.usage["storage"]["average"] == 4_666_666_667  # (2x240 + 10x120) / 360
    answer = api.get(f"/v1/users/{customer.pk}/billing/usage/records/current")
    assert answer.status_code == 200
    assert answer.json()["usage"]["storage"]["average"] == 4_666_666_667
    clock.set("2026-04-21 00:00")
    gauge.add(6 * GB)  # past the 10 GB included: billed, not refused
    clock.set("2026-04-26 00:00")
    gauge.subtract(8 * GB)
    clock.set("2026-05-01 00:00:01")

    (record,) = closer.records_close()

    assert record.usage["storage"] == {
        "kind": "gauge",
        "level": 8 * GB,
        "peak": 16 * GB,
        "average": 8 * GB,
        "unitHours": "5760000000000",
        "quota": 10 * GB,
        "overage": 1 * GB,
    }
    answer = api.get(f"/v1/users/{customer.pk}/billing/usage/records")
    assert answer.status_code == 200
    (listed,) = [r for r in answer.json()["records"] if r["id"] == record.pk]
    assert listed["usage"]["storage"] == {
        "kind": "gauge",
        "level": 8 * GB,
        "peak": 16 * GB,
        "average": 8 * GB,
        "unitHours": "5760000000000",
        "quota": 10 * GB,
        "overage": 1 * GB,
    }
    (charge,) = OutboxMessage.objects.all()
    assert charge.payload["quantity"] == 1 * GB
    assert charge.payload["unit_amount_decimal"] == "0.0000000023"
    assert charge.payload["customer"] == "cus_gauge"
    assert "over the limit on average" in charge.payload["description"]


def test_the_level_over_time_of_a_period_without_changes():
    entry = level_over_time(at("2026-04-01 00:00"), at("2026-04-01 03:00"), 7, [], None)
    assert entry == {
        "kind": "gauge",
        "level": 7,
        "peak": 7,
        "average": 7,
        "unitHours": "21",
        "quota": None,
        "overage": 0,
    }


def test_the_average_rounds_half_up_and_unit_hours_keep_fractions():
    entry = level_over_time(
        at("2026-04-01 00:00"), at("2026-04-01 02:00"), 0, [(at("2026-04-01 01:30"), 3)], 1
    )
    # 3 units for half an hour of two: 1.5 unit-hours, an average of 0.75 (1), 0.5 over.
    assert (entry["unitHours"], entry["average"], entry["peak"], entry["overage"]) == (
        "1.5",
        1,
        3,
        1,
    )


def test_a_per_seat_limit_past_what_a_counter_holds_stops_there(api, customer):
    """2^62 per seat for 4 seats is past 2^63 - 1: the limit is 2^63 - 1, and a change
    past it is refused, not a 500 (PostgreSQL's bigint, SQLite's integer)."""
    most = 2**63 - 1
    catalog.plan_upsert(
        key="wide",
        name="Wide",
        quotas={"api.calls": 2**62},
        gauges={"storage": 2**62},
        per_seat=["api.calls", "storage"],
    )
    subscriptions.subscription_set(customer=customer, plan_key="wide", seats=4)
    url = f"/v1/users/{customer.pk}/billing/gauges/storage"

    assert api.post(url, {"op": "add", "amount": most - 10}, format="json").status_code == 201
    refused = api.post(url, {"op": "add", "amount": 100}, format="json")
    record = api.post(
        f"/v1/users/{customer.pk}/billing/usage",
        {"primitive": "api.calls", "quantity": 5},
        format="json",
    )

    assert refused.status_code == 429
    assert refused.json()["usage"] == {"current": most - 10, "limit": most}
    assert record.status_code == 201
    assert api.get(f"/v1/users/{customer.pk}/billing/gauges/storage").json()["limit"] == most
    assert api.get(f"/v1/users/{customer.pk}/billing/usage/records/current").status_code == 200
