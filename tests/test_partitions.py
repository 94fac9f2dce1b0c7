"""Usage events partitioned by month on PostgreSQL: the suite's own database is partitioned
as migrate partitions it (conftest), months are created ahead, rows the DEFAULT partition
took move into their month, and retention drops whole months without breaking the ledger."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from billing_app.metering import partitions
from billing_app.models import IdempotencyKey, UsageCounter, UsageEvent
from billing_app.testutils import subscribe

from .utils import use

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db]


def partition_names():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [UsageEvent._meta.db_table],
        )
        return {row[0] for row in cursor.fetchall()}


def partition_of(event_id):
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT tableoid::regclass::text FROM {UsageEvent._meta.db_table} WHERE id = %s",
            [event_id],
        )
        return cursor.fetchone()[0].strip('"')


def month_name(instant):
    return f"{UsageEvent._meta.db_table}_y{instant.year:04d}m{instant.month:02d}"


def test_the_events_table_is_partitioned_with_months_ahead():
    with connection.cursor() as cursor:
        assert partitions.is_partitioned(cursor)
    now = timezone.now()
    names = partition_names()
    assert f"{UsageEvent._meta.db_table}_default" in names
    assert month_name(now) in names
    assert partitions.partitions_ensure() == []  # nothing missing: nothing done


def test_an_event_lands_in_its_months_partition(customer):
    subscribe(customer, quotas={"seo": 10})
    event = use(customer, 1, timezone.now())

    assert partition_of(event.event_id) == month_name(event.occurred_at)


def test_a_month_created_later_takes_its_rows_from_the_default_partition(customer):
    subscribe(customer, quotas={"seo": 1000})
    far = timezone.now() + timedelta(days=200)
    far_month = datetime(far.year, far.month, 1, tzinfo=UTC)
    with connection.cursor() as cursor:
        cursor.execute(f'DROP TABLE IF EXISTS "{month_name(far_month)}"')
    event = use(customer, 2, far_month + timedelta(days=3))
    assert partition_of(event.event_id).endswith("_default")

    created = partitions.partitions_ensure(at=far_month)

    assert month_name(far_month) in created
    assert partition_of(event.event_id) == month_name(far_month)


def test_retention_refuses_months_late_usage_may_still_reach():
    with pytest.raises(CommandError, match="may still be needed"):
        call_command("billing_partitions", "--retain-months", "1")


def test_retention_drops_old_months_with_their_counters_and_keys(customer):
    subscribe(customer, quotas={"seo": 1000}, period="day")
    old = timezone.now() - timedelta(days=200)
    old_month = datetime(old.year, old.month, 1, tzinfo=UTC)
    with connection.cursor() as cursor:
        partitions._months_create(cursor, at=old, months_back=0)
    use(customer, 3, old)
    kept = use(customer, 1, timezone.now())
    IdempotencyKey.objects.create(customer=customer, key="old", fingerprint="x", created_at=old)

    dropped = partitions.events_drop_before(month=old_month + timedelta(days=62))

    assert month_name(old_month) in dropped
    assert not UsageEvent.objects.filter(occurred_at__lt=old_month + timedelta(days=40)).exists()
    assert UsageEvent.objects.filter(pk=kept.event_id).exists()
    assert not UsageCounter.objects.filter(window_end__lte=old_month + timedelta(days=40)).exists()
    assert not IdempotencyKey.objects.filter(key="old").exists()
