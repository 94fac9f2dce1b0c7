"""Billing cycles: usage records open, close once, and never change once closed."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from billing_app import cycles, enforcement, services
from billing_app.models import UsageRecord
from billing_app.periods import add_months, cycle_window

from .factories import PlanFactory, UserFactory

# --- cycle windows ---------------------------------------------------------------------

anchors = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)
instants = anchors
cadences = st.sampled_from(["P1D", "P7D", "P1M", "P3M", "P1Y", "P1Y2M"])


@given(cadences, anchors, instants)
def test_every_instant_is_in_exactly_its_cycle(cadence, anchor, instant):
    cycle = cycle_window(cadence, anchor, instant)
    assert cycle.start <= instant < cycle.end
    # Cycles tile time: the next one starts where this one ends, the previous ends here.
    assert cycle_window(cadence, anchor, cycle.end).start == cycle.end
    assert cycle_window(cadence, anchor, cycle.start - timedelta(microseconds=1)).end == cycle.start


@pytest.mark.parametrize("day", [29, 30, 31])
def test_monthly_cycles_anchored_late_in_the_month_come_back(day):
    anchor = datetime(2027, 1, day, tzinfo=UTC)
    february = cycle_window("P1M", anchor, datetime(2027, 2, 28, 12, tzinfo=UTC))
    march = cycle_window("P1M", anchor, datetime(2027, 3, 31, 12, tzinfo=UTC))
    assert february.start == datetime(2027, 2, 28, tzinfo=UTC)  # no Feb 29-31 in 2027
    assert february.end == march.start == datetime(2027, 3, day, tzinfo=UTC)


# --- records ---------------------------------------------------------------------------

pytestmark_db = pytest.mark.django_db


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def plan(db):
    return PlanFactory(key="pro", limits={"seo": 10, "aeo": 100}, billing_cadence="P1M")


def subscribed(user, now, *, days_ago=40, length=None):
    """On ``pro`` with a Stripe period that started ``days_ago`` and lasts a month (or
    ``length`` days)."""
    start = now - timedelta(days=days_ago)
    end = add_months(start, 1) if length is None else start + timedelta(days=length)
    subscription = services.subscription_set(
        user=user,
        plan_key="pro",
        status="active",
        current_period_start=start,
        current_period_end=end,
    )
    began_then(user, start)
    return subscription


def began_then(user, start):
    """Records as if the subscription had begun at ``start`` and nothing had run since."""
    UsageRecord.objects.filter(user=user).delete()
    cycles.follow(user=user, at=start)


def use(user, quantity, at, primitive="seo"):
    enforcement.record(
        user=user, primitive=primitive, quantity=quantity, timestamp=at, enforce=False
    )


@pytestmark_db
def test_subscribing_opens_a_record_on_the_stripe_period(plan, tenant, now):
    subscription = subscribed(tenant, now, days_ago=3)

    (record,) = UsageRecord.objects.filter(user=tenant)
    assert record.status == "current"
    assert (record.cycle_start, record.cycle_end) == (
        subscription.current_period_start,
        subscription.current_period_end,
    )
    assert record.plan == plan


@pytestmark_db
def test_without_stripe_cycles_follow_the_cadence_from_the_start(plan, tenant):
    subscription = services.subscription_set(user=tenant, plan_key="pro")

    record = UsageRecord.objects.get(user=tenant)
    assert record.cycle_start == subscription.created_at
    assert (
        record.cycle_end
        == cycle_window("P1M", subscription.created_at, subscription.created_at).end
    )


@pytestmark_db
def test_closing_records_usage_quota_and_overage(plan, tenant, now):
    subscribed(tenant, now)  # the cycle ended a day ago
    use(tenant, 15, now - timedelta(days=10))  # 5 over the quota of 10
    use(tenant, 3, now - timedelta(days=10), primitive="aeo")
    use(tenant, 4, now - timedelta(hours=12))  # the next cycle's

    closed = cycles.close_cycles(at=now)

    assert [r.status for r in closed] == ["recorded"]
    record = closed[0]
    assert record.usage == {
        "seo": {"used": 15, "quota": 10, "overage": 5},
        "aeo": {"used": 3, "quota": 100, "overage": 0},
    }
    following = UsageRecord.objects.get(user=tenant, status="current")
    assert following.cycle_start == record.cycle_end
    assert cycles.current_usage(following)["seo"] == {"used": 4, "quota": 10, "overage": 0}


@pytestmark_db
def test_closing_twice_changes_nothing(plan, tenant, now):
    subscribed(tenant, now)
    use(tenant, 2, now - timedelta(days=10))
    (first,) = cycles.close_cycles(at=now)

    assert cycles.close_cycles(at=now) == []
    again = UsageRecord.objects.get(pk=first.pk)
    assert (again.usage, again.closed_at, again.cycle_end) == (
        first.usage,
        first.closed_at,
        first.cycle_end,
    )
    assert UsageRecord.objects.filter(user=tenant).count() == 2


@pytestmark_db
def test_a_recorded_record_never_changes(plan, tenant, now):
    subscribed(tenant, now)
    use(tenant, 2, now - timedelta(days=10))
    (recorded,) = cycles.close_cycles(at=now)

    use(tenant, 5, now - timedelta(days=9))  # late usage of the closed cycle
    services.subscription_set(user=tenant, plan_key="pro", status="past_due")
    cycles.follow(user=tenant)
    cycles.close_cycles(at=now + timedelta(minutes=1))

    after = UsageRecord.objects.get(pk=recorded.pk)
    assert after.usage == recorded.usage and after.status == "recorded"
    assert after.updated_at == recorded.updated_at


@pytestmark_db
def test_missed_cycles_are_each_recorded(plan, tenant, now):
    start = now - timedelta(days=95)
    services.subscription_set(
        user=tenant,
        plan_key="pro",
        current_period_start=start,
        current_period_end=start + timedelta(days=30),
    )
    began_then(tenant, start)

    closed = cycles.close_cycles(at=now)

    assert len(closed) == 3
    for earlier, later in itertools.pairwise(closed):
        assert later.cycle_start == earlier.cycle_end
    current = UsageRecord.objects.get(user=tenant, status="current")
    assert current.cycle_start == closed[-1].cycle_end <= now < current.cycle_end


@pytestmark_db
def test_stripe_moving_the_period_on_closes_the_old_cycle(plan, tenant, now):
    subscription = subscribed(tenant, now, days_ago=29, length=30)
    use(tenant, 7, now - timedelta(days=2))
    renewed = subscription.current_period_end - timedelta(days=2)  # Stripe renewed early

    services.subscription_set(
        user=tenant,
        plan_key="pro",
        current_period_start=renewed,
        current_period_end=renewed + timedelta(days=30),
    )

    old = UsageRecord.objects.get(user=tenant, status="recorded")
    assert old.cycle_end == renewed
    assert old.usage["seo"]["used"] == 7
    assert UsageRecord.objects.get(user=tenant, status="current").cycle_start == renewed


@pytestmark_db
def test_cancel_now_finalizes_and_at_end_does_not(plan, tenant, now):
    subscribed(tenant, now, days_ago=3)
    use(tenant, 1, now - timedelta(hours=1))
    from billing_app import stripe_sync

    stripe_sync.subscription_cancel(user=tenant, when="end")
    assert UsageRecord.objects.get(user=tenant).status == "current"

    stripe_sync.subscription_cancel(user=tenant, when="now")
    record = UsageRecord.objects.get(user=tenant)
    assert record.status == "final"
    assert record.usage["seo"]["used"] == 1
    assert cycles.close_cycles(at=now + timedelta(days=60)) == []
    assert UsageRecord.objects.filter(user=tenant).count() == 1


@pytestmark_db
def test_no_subscription_no_record(tenant):
    assert cycles.follow(user=tenant) is None
    assert not UsageRecord.objects.exists()


@pytestmark_db
def test_command_and_celery_task_close_cycles(plan, now):
    from billing_app import tasks

    first, second = UserFactory(), UserFactory()
    subscribed(first, now)
    subscribed(second, now)
    UsageRecord.objects.filter(user=second).update(cycle_end=now + timedelta(days=1))

    call_command("billing_close_cycles")
    assert UsageRecord.objects.filter(status="recorded").count() == 1

    UsageRecord.objects.filter(user=second, status="current").update(
        cycle_end=now - timedelta(seconds=1)
    )
    assert tasks.close_cycles.apply().get() == 1


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_schedulers_running_at_once_close_each_cycle_once(plan, now):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    tenants = [UserFactory() for _ in range(20)]
    for tenant in tenants:
        subscribed(tenant, now, days_ago=65)
    barrier = threading.Barrier(8)

    def scheduler(_):
        barrier.wait()
        try:
            return len(cycles.close_cycles(at=now))
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        closed = sum(pool.map(scheduler, range(8)))

    assert closed == 2 * len(tenants)  # each of the two ended cycles, once
    for tenant in tenants:
        statuses = list(
            UsageRecord.objects.filter(user=tenant)
            .order_by("cycle_start")
            .values_list("status", flat=True)
        )
        assert statuses == ["recorded", "recorded", "current"]


# --- API -------------------------------------------------------------------------------


@pytestmark_db
def test_records_api_lists_newest_first_with_a_status_filter(api, plan, tenant, now):
    subscribed(tenant, now, days_ago=95)
    cycles.close_cycles(at=now)
    base = f"/v1/users/{tenant.pk}/billing/usage/records"

    body = api.get(base, {"pageSize": 2}).json()
    rest = api.get(body["next"]).json()

    statuses = [r["status"] for r in body["records"] + rest["records"]]
    assert statuses == ["current", "recorded", "recorded", "recorded"]
    starts = [r["cycleStart"] for r in body["records"] + rest["records"]]
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
    }


@pytestmark_db
def test_records_api_refuses_an_unknown_status(api, plan, tenant, now):
    subscribed(tenant, now)
    response = api.get(f"/v1/users/{tenant.pk}/billing/usage/records", {"status": "open"})
    assert response.status_code == 400 and "status" in response.json()


@pytestmark_db
def test_current_record_shows_live_usage(api, plan, tenant, now):
    subscribed(tenant, now, days_ago=2)
    use(tenant, 12, now - timedelta(hours=1))

    body = api.get(f"/v1/users/{tenant.pk}/billing/usage/records/current").json()

    assert body["status"] == "current" and body["plan"] == "pro"
    assert body["usage"]["seo"] == {"used": 12, "quota": 10, "overage": 2}
    assert body["closedAt"] is None


@pytestmark_db
def test_current_record_404_without_subscription(api, tenant):
    response = api.get(f"/v1/users/{tenant.pk}/billing/usage/records/current")
    assert response.status_code == 404


@pytestmark_db
def test_records_api_is_for_operators(anonymous, tenant_token, tenant):
    path = f"/v1/users/{tenant.pk}/billing/usage/records"
    assert anonymous.get(path).status_code == 401
    anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_token}")
    assert anonymous.get(path).status_code == 403


@pytestmark_db
def test_a_cancellation_heard_after_the_cycle_ended_keeps_the_cycles_end(plan, tenant, now):
    subscribed(tenant, now, days_ago=40)  # its cycle ended about ten days ago
    record = UsageRecord.objects.get(user=tenant)

    services.subscription_set(user=tenant, plan_key="pro", status="canceled")

    final = UsageRecord.objects.get(pk=record.pk)
    assert final.status == "final" and final.cycle_end == record.cycle_end
