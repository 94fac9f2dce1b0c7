"""Billing periods and their usage records: periods are stored rows that tile time, each
is recorded once when it ends, and a record never changes."""

from __future__ import annotations

import io
import logging
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing_app.catalog import services as catalog
from billing_app.cycles import selectors as cycles
from billing_app.cycles import services as closer
from billing_app.metering import services as metering
from billing_app.models import BillingPeriod, OutboxMessage, Problem, Subscription, UsageRecord
from billing_app.periods import add_months, cycle_window
from billing_app.stripe import calls as stripe_calls
from billing_app.subscriptions import services as subscriptions

from .factories import CustomerFactory
from .utils import assert_tiled, periods_of, use

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def plan(db):
    return catalog.plan_upsert(
        key="pro", name="Pro", quotas={"seo": 10, "aeo": 100}, billing_cadence="P1M"
    )[0]


def subscribed(customer, now, *, days_ago=40, length=None, **fields):
    """On ``pro`` with a stated period that started ``days_ago`` and lasts a month (or
    ``length`` days), set at ``now``."""
    start = now - timedelta(days=days_ago)
    end = add_months(start, 1) if length is None else start + timedelta(days=length)
    return subscriptions.subscription_set(
        customer=customer,
        plan_key=fields.pop("plan_key", "pro"),
        status="active",
        current_period_start=start,
        current_period_end=end,
        at=now,
        **fields,
    )


def bounds(periods):
    return [(p.start, p.end) for p in periods]


# --- periods as stored rows -------------------------------------------------------------


def test_a_stated_period_is_stored_as_given(plan, customer, now):
    subscription = subscribed(customer, now, days_ago=3)

    (period,) = periods_of(customer)
    start = now - 3 * DAY
    assert (period.start, period.end) == (start, add_months(start, 1))
    assert (period.plan, period.source, period.subscription) == (plan, "operator", subscription)
    current = cycles.record_current(customer=customer, at=now)
    assert current.status == "current" and current.period == period
    assert not UsageRecord.objects.exists()  # the open period's record is not stored


def test_without_a_stated_period_periods_follow_the_cadence_from_the_start(plan, customer):
    subscription = subscriptions.subscription_set(customer=customer, plan_key="pro")

    (period,) = periods_of(customer)
    assert period.start == subscription.started_at == subscription.billing_cycle_anchor
    assert period.end == cycle_window("P1M", period.start, period.start).end
    assert period.end == add_months(period.start, 1)
    assert period.source == "cadence"


def test_no_subscription_no_period_and_no_record(customer, now):
    assert cycles.record_current(customer=customer) is None
    assert subscriptions.periods_advance(at=now) == []
    assert closer.records_close(at=now + 400 * DAY) == []
    assert not BillingPeriod.objects.exists() and not UsageRecord.objects.exists()


def test_a_stated_period_reaching_into_a_recorded_one_starts_where_the_records_end(
    plan, customer, now
):
    subscribed(customer, now)
    (recorded,) = closer.records_close(at=now)
    end = recorded.period.end

    # A late webhook states a period that began before the recorded one ended.
    subscriptions.subscription_set(
        customer=customer,
        plan_key="pro",
        current_period_start=end - 5 * DAY,
        current_period_end=end + 30 * DAY,
        source="stripe",
        at=now,
    )

    rows = periods_of(customer)
    assert_tiled(rows)
    assert bounds(rows) == [(recorded.period.start, end), (end, end + 30 * DAY)]
    assert rows[1].source == "stripe"
    assert UsageRecord.objects.get().period.end == end


def test_stripe_renewing_early_cuts_the_old_period_there(plan, customer, now):
    start = now - 29 * DAY
    subscribed(customer, now, days_ago=29, length=30)
    use(customer, 7, now - 2 * DAY)
    renewed = now - DAY

    subscriptions.subscription_set(
        customer=customer,
        plan_key="pro",
        current_period_start=renewed,
        current_period_end=renewed + 30 * DAY,
        source="stripe",
        at=now,
    )

    rows = periods_of(customer)
    assert bounds(rows) == [(start, renewed), (renewed, renewed + 30 * DAY)]
    assert rows[1].source == "stripe"
    (old,) = closer.records_close(at=now)
    assert old.period.end == renewed
    assert old.usage["seo"]["used"] == 7


# --- closing ----------------------------------------------------------------------------


def test_closing_records_usage_quota_and_overage(plan, customer, now):
    start = now - 40 * DAY
    subscribed(customer, now)  # the stated period ended about ten days ago
    use(customer, 15, start + 6 * DAY)  # 5 over the quota of 10
    use(customer, 3, start + 6 * DAY, primitive="aeo")
    use(customer, 4, now - timedelta(hours=1))  # the next period's

    closed = closer.records_close(at=now)

    assert [r.status for r in closed] == ["recorded"]
    (record,) = closed
    assert record.usage == {
        "seo": {"used": 15, "quota": 10, "overage": 5},
        "aeo": {"used": 3, "quota": 100, "overage": 0},
    }
    assert (record.adjustments, record.closed_at, record.plan) == ([], now, plan)
    current = cycles.record_current(customer=customer, at=now)
    assert current.period.start == record.period.end
    assert current.usage["seo"] == {"used": 4, "quota": 10, "overage": 0}


def test_overage_counts_a_quota_window_once_across_a_period_boundary(customer, now):
    # A yearly quota, monthly periods: usage of the window's earlier periods is counted
    # against the quota first.
    catalog.plan_upsert(
        key="yearly", name="Yearly", quotas={"seo": 10}, period="year", billing_cadence="P1M"
    )
    start = now - 70 * DAY
    subscriptions.subscription_set(
        customer=customer,
        plan_key="yearly",
        current_period_start=start,
        current_period_end=add_months(start, 1),
        at=now,
    )
    use(customer, 8, start + DAY)
    use(customer, 5, add_months(start, 1) + DAY)

    first, second = closer.records_close(at=now)

    assert first.usage["seo"] == {"used": 8, "quota": 10, "overage": 0}
    assert second.usage["seo"] == {"used": 5, "quota": 10, "overage": 3}


def test_closing_twice_changes_nothing(plan, customer, now):
    subscribed(customer, now)
    use(customer, 2, now - 30 * DAY)
    (first,) = closer.records_close(at=now)

    assert closer.records_close(at=now) == []
    assert closer.records_close(at=now + timedelta(minutes=1)) == []
    again = UsageRecord.objects.get(pk=first.pk)
    assert (again.usage, again.closed_at, again.updated_at) == (
        first.usage,
        first.closed_at,
        first.updated_at,
    )
    assert UsageRecord.objects.count() == 1


def test_a_recorded_record_never_changes(plan, customer, now):
    subscribed(customer, now)
    use(customer, 2, now - 30 * DAY)
    (recorded,) = closer.records_close(at=now)

    use(customer, 5, now - 29 * DAY)  # late usage of the recorded period
    subscriptions.subscription_set(customer=customer, plan_key="pro", status="past_due")
    subscriptions.periods_advance(at=now + 60 * DAY)
    closer.records_close(at=now + 60 * DAY)

    after = UsageRecord.objects.get(pk=recorded.pk)
    assert (after.usage, after.adjustments, after.status, after.closed_at) == (
        recorded.usage,
        [],
        "recorded",
        recorded.closed_at,
    )
    assert after.updated_at == recorded.updated_at
    assert after.period.end == recorded.period.end


def test_a_scheduler_that_did_not_run_for_months_records_each_missed_period(plan, customer, now):
    start = now - 95 * DAY
    # Set at the start, and no scheduler ran since.
    subscriptions.subscription_set(
        customer=customer,
        plan_key="pro",
        current_period_start=start,
        current_period_end=add_months(start, 1),
        at=start,
    )
    assert len(periods_of(customer)) == 1

    assert subscriptions.periods_advance(at=now) == []
    closed = closer.records_close(at=now)

    assert [(r.period.start, r.period.end) for r in closed] == [
        (add_months(start, n), add_months(start, n + 1)) for n in range(3)
    ]
    rows = periods_of(customer)
    assert_tiled(rows)
    assert rows[-1].start <= now < rows[-1].end
    assert cycles.record_current(customer=customer, at=now).period == rows[-1]


def test_cancel_now_finalizes_and_at_end_does_not(plan, customer, now):
    subscribed(customer, now, days_ago=3)
    use(customer, 1, now - timedelta(hours=1))
    period_end = add_months(now - 3 * DAY, 1)

    stripe_calls.subscription_cancel(customer=customer, when="end")
    assert cycles.record_current(customer=customer).status == "current"
    (period,) = periods_of(customer)
    assert (period.end, period.end_reason) == (period_end, "")

    subscription = stripe_calls.subscription_cancel(customer=customer, when="now")
    (period,) = periods_of(customer)
    assert (period.end, period.end_reason) == (subscription.ended_at, "cancellation")
    assert cycles.record_current(customer=customer) is None
    (record,) = closer.records_close()
    assert record.status == "final"
    assert record.usage["seo"]["used"] == 1

    later = now + 60 * DAY
    assert subscriptions.periods_advance(at=later) == []
    assert closer.records_close(at=later) == []
    assert UsageRecord.objects.count() == 1 and len(periods_of(customer)) == 1


def test_a_cancellation_heard_after_the_period_ended_keeps_that_periods_end(plan, customer, now):
    subscribed(customer, now, days_ago=40)  # its stated period ended about ten days ago
    ended = periods_of(customer)[0].end

    subscriptions.subscription_set(customer=customer, plan_key="pro", status="canceled", at=now)

    first, last = periods_of(customer)
    assert (first.end, first.end_reason) == (ended, "")
    assert (last.start, last.end, last.end_reason) == (ended, now, "cancellation")
    records = closer.records_close(at=now)
    assert [(r.status, r.period.end) for r in records] == [
        ("recorded", ended),
        ("final", now),
    ]


def test_command_and_celery_task_close_periods(plan, now):
    from billing_app import tasks

    first, second = CustomerFactory(), CustomerFactory()
    subscribed(first, now)  # ended ten days ago
    subscribed(second, now, days_ago=3)  # runs for weeks yet

    out = io.StringIO()
    call_command("billing_close_cycles", stdout=out, stderr=io.StringIO())
    assert UsageRecord.objects.filter(status="recorded").count() == 1
    assert f"customer {first.pk}:" in out.getvalue() and "recorded" in out.getvalue()

    # The second's period is cut short now (the operator states a new end).
    subscriptions.subscription_set(
        customer=second,
        plan_key="pro",
        current_period_start=now - 3 * DAY,
        current_period_end=timezone.now(),
    )
    assert tasks.close_cycles.apply().get() == 1
    assert UsageRecord.objects.get(customer_id=second.pk).period.end <= timezone.now()


# --- periods tile time ------------------------------------------------------------------


def test_operator_managed_periods_tile_time_across_renewals(plan, customer, now):
    start = now - 200 * DAY
    subscriptions.subscription_set(customer=customer, plan_key="pro", at=start)
    subscription = Subscription.objects.get()
    subscription_start = subscription.started_at

    # The scheduler runs at uneven times, twice at some of them.
    for at in [start + n * 11 * DAY for n in range(1, 19)] + [now, now]:
        assert subscriptions.periods_advance(at=at) == []
        closer.records_close(at=at)

    rows = periods_of(customer)
    assert_tiled(rows)
    assert rows[0].start == subscription_start
    assert [p.end for p in rows] == [
        add_months(subscription_start, n + 1) for n in range(len(rows))
    ]
    assert rows[-1].start <= now < rows[-1].end
    assert all(p.source == "cadence" and p.end_reason == "" for p in rows)
    # Every ended period has its one record, the open one none.
    assert sorted(UsageRecord.objects.values_list("period_id", flat=True)) == sorted(
        p.pk for p in rows[:-1]
    )


def test_a_plan_change_splits_the_period_and_records_the_old_part_on_the_old_plan(
    plan, customer, now
):
    catalog.plan_upsert(key="max", name="Max", quotas={"seo": 1000}, billing_cadence="P1M")
    start = now - 10 * DAY
    subscriptions.subscription_set(customer=customer, plan_key="pro", at=start)
    started = Subscription.objects.get().started_at
    use(customer, 12, now - 5 * DAY)  # on pro: 2 over
    changed = now - 3 * DAY

    subscriptions.subscription_set(customer=customer, plan_key="max", at=changed)
    use(customer, 20, now - DAY)  # on max

    old, new = periods_of(customer)
    assert_tiled([old, new])
    assert (old.start, old.end, old.plan.key, old.end_reason) == (
        started,
        changed,
        "pro",
        "plan_change",
    )
    assert (new.start, new.end, new.plan.key) == (changed, add_months(started, 1), "max")

    (record,) = closer.records_close(at=now)
    assert (record.period, record.plan.key, record.status) == (old, "pro", "recorded")
    assert record.usage["seo"] == {"used": 12, "quota": 10, "overage": 2}
    current = cycles.record_current(customer=customer, at=now)
    assert current.period == new and current.plan.key == "max"
    assert current.usage["seo"]["used"] == 20
    assert current.adjustments == []


def test_cancel_now_ends_the_period_at_the_cancellation_and_its_record_is_final(
    plan, customer, now
):
    start = now - 10 * DAY
    subscriptions.subscription_set(customer=customer, plan_key="pro", at=start)
    use(customer, 3, now - 2 * DAY)
    cancelled = now - DAY

    subscriptions.subscription_set(
        customer=customer, plan_key="pro", status="canceled", at=cancelled
    )
    use(customer, 4, now - timedelta(hours=1))  # after the end: no period's

    (period,) = periods_of(customer)
    assert (period.end, period.end_reason) == (cancelled, "cancellation")
    (record,) = closer.records_close(at=now)
    assert (record.status, record.usage["seo"]["used"]) == ("final", 3)


def test_subscribing_again_after_a_cancel_in_the_same_cycle_opens_a_new_period(plan, customer, now):
    start = now - 10 * DAY
    subscriptions.subscription_set(customer=customer, plan_key="pro", at=start)
    started = Subscription.objects.get().started_at
    use(customer, 3, now - 8 * DAY)
    cancelled, again = now - 6 * DAY, now - 4 * DAY
    subscriptions.subscription_set(
        customer=customer, plan_key="pro", status="canceled", at=cancelled
    )
    # The first life's period is recorded before the customer comes back.
    (first_record,) = closer.records_close(at=cancelled + timedelta(hours=1))

    subscriptions.subscription_set(customer=customer, plan_key="pro", status="active", at=again)
    use(customer, 5, now - 2 * DAY)

    first, second = periods_of(customer)
    assert (first.start, first.end, first.end_reason) == (started, cancelled, "cancellation")
    assert (second.start, second.end_reason) == (again, "")
    assert second.end == add_months(again, 1)  # the new life has a new anchor
    assert Subscription.objects.get().billing_cycle_anchor == again

    # The new period runs its course, and is recorded with the usage since it began.
    closed = closer.records_close(at=second.end)
    assert [r.period for r in closed] == [second]
    assert closed[0].status == "recorded"
    assert closed[0].usage["seo"]["used"] == 5
    assert closed[0].adjustments == []
    assert first_record.usage["seo"]["used"] == 3
    # Billed once: in the records, the events of the second life add up to 5, once.
    billed = [
        r.usage["seo"]["used"] + sum(a["used"] for a in r.adjustments)
        for r in UsageRecord.objects.all()
    ]
    assert sorted(billed) == [3, 5]


def test_subscribing_again_before_the_cancelled_period_is_recorded(plan, customer, now):
    start = now - 10 * DAY
    subscriptions.subscription_set(customer=customer, plan_key="pro", at=start)
    cancelled, again = now - 6 * DAY, now - 4 * DAY
    subscriptions.subscription_set(
        customer=customer, plan_key="pro", status="canceled", at=cancelled
    )
    subscriptions.subscription_set(customer=customer, plan_key="pro", status="active", at=again)
    use(customer, 5, now - 2 * DAY)

    subscriptions.periods_advance(at=now + 40 * DAY)
    closed = closer.records_close(at=now + 40 * DAY)

    assert [(r.status, r.period.start) for r in closed] == [
        ("final", start),
        ("recorded", again),
    ]
    assert [r.usage["seo"]["used"] for r in closed] == [0, 5]
    assert all(r.adjustments == [] for r in closed)


# --- cancel at period end, without Stripe -----------------------------------------------


def test_cancel_at_period_end_is_carried_out_by_the_scheduler_at_the_end_not_before(
    plan, customer, now
):
    start = now - 10 * DAY
    subscriptions.subscription_set(customer=customer, plan_key="pro", at=start)
    stripe_calls.subscription_cancel(customer=customer, when="end")
    (period,) = periods_of(customer)
    end = period.end

    call_command("billing_close_cycles", stdout=io.StringIO(), stderr=io.StringIO())
    assert subscriptions.periods_advance(at=end - timedelta(microseconds=1)) == []
    assert closer.records_close(at=end - timedelta(microseconds=1)) == []
    subscription = Subscription.objects.get()
    assert (subscription.status, subscription.cancel_at_period_end) == ("active", True)

    assert subscriptions.periods_advance(at=end) == []
    closed = closer.records_close(at=end)

    subscription.refresh_from_db()
    assert (subscription.status, subscription.ended_at) == ("canceled", end)
    (period,) = periods_of(customer)
    assert (period.end, period.end_reason) == (end, "cancellation")
    assert [r.status for r in closed] == ["final"]
    # Nothing after the end: no period is opened and nothing more is recorded.
    assert subscriptions.periods_advance(at=end + 90 * DAY) == []
    assert closer.records_close(at=end + 90 * DAY) == []
    assert len(periods_of(customer)) == 1


def test_a_scheduler_running_late_ends_it_at_the_period_end_all_the_same(plan, customer, now):
    subscriptions.subscription_set(customer=customer, plan_key="pro", at=now - 10 * DAY)
    stripe_calls.subscription_cancel(customer=customer, when="end")
    end = periods_of(customer)[0].end
    use(customer, 2, end + DAY)  # after the end: no period's

    assert subscriptions.periods_advance(at=end + 20 * DAY) == []
    closed = closer.records_close(at=end + 20 * DAY)

    subscription = Subscription.objects.get()
    assert (subscription.status, subscription.ended_at) == ("canceled", end)
    (period,) = periods_of(customer)
    assert (period.end, period.end_reason) == (end, "cancellation")
    assert [(r.status, r.usage["seo"]["used"]) for r in closed] == [("final", 0)]


def test_a_reactivated_subscription_renews_instead(plan, customer, now):
    subscriptions.subscription_set(customer=customer, plan_key="pro", at=now - 10 * DAY)
    stripe_calls.subscription_cancel(customer=customer, when="end")
    stripe_calls.subscription_reactivate(customer=customer)
    end = periods_of(customer)[0].end

    subscriptions.periods_advance(at=end)
    closed = closer.records_close(at=end)

    assert Subscription.objects.get().status == "active"
    assert [r.status for r in closed] == ["recorded"]
    rows = periods_of(customer)
    assert_tiled(rows)
    assert rows[-1].start == end


# --- late usage ---------------------------------------------------------------------------


@pytest.fixture
def billed_plan(db):
    return catalog.plan_upsert(
        key="metered",
        name="Metered",
        quotas={"seo": 10},
        overage={"seo": "0.5"},
        billing_cadence="P1M",
    )[0]


def test_late_usage_is_an_adjustment_of_the_next_record_and_billed_with_it(
    billed_plan, customer, api, now
):
    start = now - 20 * DAY
    subscriptions.subscription_set(
        customer=customer,
        plan_key="metered",
        stripe_customer_id="cus_late",
        current_period_start=start,
        current_period_end=start + 10 * DAY,
        at=now,
    )
    use(customer, 8, start + DAY)
    (closed,) = closer.records_close(at=now)
    frozen = UsageRecord.objects.values().get(pk=closed.pk)
    assert closed.usage["seo"] == {"used": 8, "quota": 10, "overage": 0}

    # Reported late, through the API, for the closed period: 5 more, 3 over.
    response = api.post(
        f"/v1/users/{customer.pk}/billing/usage",
        {"primitive": "seo", "quantity": 5, "timestamp": (start + 2 * DAY).isoformat()},
        format="json",
    )
    assert response.status_code == 201

    adjustment = {"periodId": closed.pk, "primitive": "seo", "used": 5, "overage": 3}
    body = api.get(f"/v1/users/{customer.pk}/billing/usage/records/current").json()
    assert body["adjustments"] == [adjustment]
    assert cycles.record_current(customer=customer).adjustments == [adjustment]

    # Several closes: the adjustment is written into the next record once, and billed.
    for days in (40, 41, 75, 110):
        subscriptions.periods_advance(at=start + days * DAY)
        closer.records_close(at=start + days * DAY)
    records = list(UsageRecord.objects.order_by("period__start"))
    assert [r.adjustments for r in records] == [[], [adjustment]] + [[]] * (len(records) - 2)
    assert UsageRecord.objects.values().get(pk=closed.pk) == frozen
    (charge,) = OutboxMessage.objects.filter(kind="stripe_invoice_item")
    assert charge.key == f"billing-overage-{records[1].pk}-seo-late-{closed.pk}"
    assert (charge.payload["quantity"], charge.payload["customer"]) == (3, "cus_late")
    assert charge.payload["period"]["start"] == int(start.timestamp())


def test_late_overage_is_priced_by_the_plan_of_the_period_it_belongs_to(
    billed_plan, customer, api, now
):
    catalog.plan_upsert(key="flat", name="Flat", quotas={"seo": 1000})  # bills no overage
    start = now - 20 * DAY
    subscriptions.subscription_set(
        customer=customer,
        plan_key="metered",
        stripe_customer_id="cus_late",
        current_period_start=start,
        current_period_end=start + 10 * DAY,
        at=now,
    )
    use(customer, 10, start + DAY)
    closer.records_close(at=now)
    subscriptions.subscription_set(customer=customer, plan_key="flat", at=now)
    response = api.post(
        f"/v1/users/{customer.pk}/billing/usage",
        {"primitive": "seo", "quantity": 4, "timestamp": (start + 2 * DAY).isoformat()},
        format="json",
    )
    assert response.status_code == 201

    subscriptions.periods_advance(at=start + 45 * DAY)
    closer.records_close(at=start + 45 * DAY)

    (charge,) = OutboxMessage.objects.filter(kind="stripe_invoice_item")
    assert (charge.payload["quantity"], charge.payload["unit_amount_decimal"]) == (4, "0.5")


def test_a_refund_after_the_close_is_a_negative_adjustment(billed_plan, customer, now):
    start = now - 20 * DAY
    subscriptions.subscription_set(
        customer=customer,
        plan_key="metered",
        stripe_customer_id="cus_late",
        current_period_start=start,
        current_period_end=start + 10 * DAY,
        at=now,
    )
    use(customer, 9, start + DAY)
    failed_call = use(customer, 3, start + 9 * DAY)  # its view failed after the close
    (closed,) = closer.records_close(at=now)
    assert closed.usage["seo"] == {"used": 12, "quota": 10, "overage": 2}
    charges = OutboxMessage.objects.count()

    metering.usage_refund(reservation=failed_call)

    adjustment = {"periodId": closed.pk, "primitive": "seo", "used": -3, "overage": -2}
    assert cycles.record_current(customer=customer).adjustments == [adjustment]
    subscriptions.periods_advance(at=now + 30 * DAY)
    closer.records_close(at=now + 30 * DAY)
    closer.records_close(at=now + 31 * DAY)
    following = UsageRecord.objects.exclude(pk=closed.pk).get()
    assert following.adjustments == [adjustment]
    assert UsageRecord.objects.get(pk=closed.pk).usage == closed.usage
    assert OutboxMessage.objects.count() == charges  # nothing more to bill


# --- the closer: one period, one transaction ----------------------------------------------


def test_a_period_that_fails_to_close_is_a_problem_and_the_others_are_recorded(
    plan, now, monkeypatch, caplog
):
    customers = [CustomerFactory() for _ in range(3)]
    for customer in customers:
        subscribed(customer, now)
    broken = customers[1]
    real = closer.overage_charges

    def overage_charges(record):
        if record.customer_id == broken.pk:
            raise RuntimeError("Stripe price missing")
        return real(record)

    monkeypatch.setattr(closer, "overage_charges", overage_charges)
    with caplog.at_level(logging.ERROR, logger="billing_app.cycles.services"):
        closed = closer.records_close(at=now)

    assert sorted(r.customer_id for r in closed) == sorted(
        [customers[0].pk, customers[2].pk], key=str
    )
    assert not UsageRecord.objects.filter(customer_id=broken.pk).exists()  # rolled back
    failed = BillingPeriod.objects.get(customer_id=broken.pk, end__lte=now)
    problem = Problem.objects.get()
    assert (problem.kind, problem.subject) == ("cycle_close", f"period:{failed.pk}")
    assert "Stripe price missing" in problem.detail
    assert any(f"billing period {failed.pk}" in r.getMessage() for r in caplog.records)

    closer.records_close(at=now)  # still broken: the same problem, tried again
    assert Problem.objects.get().attempts == 2

    monkeypatch.setattr(closer, "overage_charges", real)
    (fixed,) = closer.records_close(at=now)
    assert fixed.period == failed
    assert not Problem.objects.exists()
    assert UsageRecord.objects.count() == 3


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_schedulers_running_at_once_record_each_period_once(plan, now):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    customers = [CustomerFactory() for _ in range(60)]
    start = now - 65 * DAY
    for customer in customers:
        # Set then, and no scheduler ran since: they open the missed periods too.
        subscriptions.subscription_set(customer=customer, plan_key="pro", at=start)
    barrier = threading.Barrier(16)

    def scheduler(_):
        barrier.wait()
        try:
            failures = subscriptions.periods_advance(at=now)
            return failures, len(closer.records_close(at=now))
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(scheduler, range(16)))

    assert [failures for failures, _ in results] == [[]] * 16
    assert sum(closed for _, closed in results) == 2 * len(customers)
    assert not Problem.objects.exists()
    for customer in customers:
        rows = periods_of(customer)
        assert_tiled(rows)
        assert len(rows) == 3
        statuses = list(
            UsageRecord.objects.filter(customer_id=customer.pk)
            .order_by("period__start")
            .values_list("status", flat=True)
        )
        assert statuses == ["recorded", "recorded"]


# --- API ----------------------------------------------------------------------------------


def test_records_api_lists_newest_first_with_a_status_filter(api, plan, customer, now):
    subscribed(customer, now, days_ago=95)
    closer.records_close(at=now)
    base = f"/v1/users/{customer.pk}/billing/usage/records"

    body = api.get(base, {"pageSize": 2}).json()
    rest = api.get(body["next"]).json()

    records = body["records"] + rest["records"]
    assert [r["status"] for r in records] == ["current", "recorded", "recorded", "recorded"]
    starts = [r["cycleStart"] for r in records]
    assert starts == sorted(starts, reverse=True)
    recorded = api.get(base, {"status": "recorded"}).json()["records"]
    assert len(recorded) == 3 and {r["status"] for r in recorded} == {"recorded"}
    assert set(recorded[0]) == {
        "id",
        "plan",
        "status",
        "cycleStart",
        "cycleEnd",
        "closedAt",
        "usage",
        "adjustments",
    }
    (current,) = api.get(base, {"status": "current"}).json()["records"]
    assert current["closedAt"] is None and current["id"] == periods_of(customer)[-1].pk


def test_records_api_refuses_an_unknown_status(api, plan, customer, now):
    subscribed(customer, now)
    response = api.get(f"/v1/users/{customer.pk}/billing/usage/records", {"status": "open"})
    assert response.status_code == 400 and "status" in response.json()


def test_current_record_shows_live_usage(api, plan, customer, now):
    subscribed(customer, now, days_ago=2)
    use(customer, 12, now - timedelta(hours=1))

    body = api.get(f"/v1/users/{customer.pk}/billing/usage/records/current").json()

    assert body["status"] == "current" and body["plan"] == "pro"
    assert body["usage"]["seo"] == {"kind": "counter", "used": 12, "quota": 10, "overage": 2}
    assert body["closedAt"] is None and body["adjustments"] == []


def test_current_record_404_without_subscription(api, customer):
    response = api.get(f"/v1/users/{customer.pk}/billing/usage/records/current")
    assert response.status_code == 404


def test_records_api_is_for_operators(anonymous, customer_token, customer):
    path = f"/v1/users/{customer.pk}/billing/usage/records"
    assert anonymous.get(path).status_code == 401
    anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {customer_token}")
    assert anonymous.get(path).status_code == 403


# --- changes heard before the scheduler opened the period they fall in -------------------


def lagging(customer, now):
    """Subscribed at ``start`` with a ten-day period; no scheduler ran since it ended."""
    start = now - 15 * DAY
    subscriptions.subscription_set(
        customer=customer,
        plan_key="pro",
        current_period_start=start,
        current_period_end=start + 10 * DAY,
        at=start,
    )
    (period,) = periods_of(customer)
    return period.end


def test_a_cancellation_before_the_scheduler_ran_ends_the_period_it_falls_in(plan, customer, now):
    ended = lagging(customer, now)
    use(customer, 4, ended + DAY)

    subscriptions.subscription_set(customer=customer, plan_key="pro", status="canceled", at=now)

    rows = periods_of(customer)
    assert_tiled(rows)
    assert (rows[-1].end, rows[-1].end_reason) == (now, "cancellation")
    records = closer.records_close(at=now)
    assert [r.status for r in records][-1] == "final"
    assert sum(r.usage["seo"]["used"] for r in records) == 4


def test_a_plan_change_before_the_scheduler_ran_keeps_the_usage_before_it_on_the_old_plan(
    plan, customer, now
):
    catalog.plan_upsert(key="max", name="Max", quotas={"seo": 1000}, billing_cadence="P1M")
    ended = lagging(customer, now)
    use(customer, 12, ended + DAY)  # on pro: 2 over

    subscriptions.subscription_set(customer=customer, plan_key="max", at=now)

    rows = periods_of(customer)
    assert_tiled(rows)
    *_, before, after = rows
    assert (before.plan.key, before.end, before.end_reason) == ("pro", now, "plan_change")
    assert (after.plan.key, after.start) == ("max", now)
    records = closer.records_close(at=now)
    assert records[-1].period == before
    assert records[-1].usage["seo"] == {"used": 12, "quota": 10, "overage": 2}
