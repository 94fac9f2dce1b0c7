"""Usage events partitioned by month on PostgreSQL (declarative partitioning).

The events table grows with every call; its partitions are one month of ``occurred_at``
each, so the indexes a call writes stay small, a month of old events is dropped as a whole
(``billing_partitions --retain-months N``), and queries that name a period touch its months
only. A ``DEFAULT`` partition takes what no month covers, so an insert never fails for want
of a partition; the scheduler keeps the next months ready (:func:`partitions_ensure`, from
``billing_close_cycles``). On SQLite everything here does nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from ..conf import billing_settings
from ..models import BillingPeriod, IdempotencyKey, UsageCounter, UsageEvent

logger = logging.getLogger(__name__)

MONTHS_AHEAD = 3


def _table() -> str:
    return UsageEvent._meta.db_table


def _month(instant: datetime, shift: int = 0) -> datetime:
    index = instant.year * 12 + instant.month - 1 + shift
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _name(month: datetime) -> str:
    return f"{_table()}_y{month.year:04d}m{month.month:02d}"


def is_partitioned(cursor: Any) -> bool:
    cursor.execute(
        "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        "WHERE c.relname = %s AND pg_table_is_visible(c.oid)",
        [_table()],
    )
    return cursor.fetchone() is not None


def events_partition(*, months_back: int = 2) -> bool:
    """Turn the events table into a table partitioned by month of ``occurred_at``, keeping
    its rows, indexes and constraints; answers whether it did (False: not PostgreSQL, or
    partitioned already). Run by a migration, and by the test suite on its database."""
    if connection.vendor != "postgresql":
        return False
    table = _table()
    old = f"{table}_unpartitioned"
    with transaction.atomic(), connection.cursor() as cursor:
        if is_partitioned(cursor):
            return False
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
            "(SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)",
            [table, table],
        )
        indexes = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'f'",
            [table],
        )
        foreign_keys = cursor.fetchall()
        cursor.execute(f'ALTER TABLE "{table}" RENAME TO "{old}"')
        # Unique constraints of a partitioned table must include the partition key: the
        # primary key becomes (id, occurred_at); ids still come from one sequence.
        cursor.execute(
            f'CREATE TABLE "{table}" (LIKE "{old}" INCLUDING DEFAULTS INCLUDING IDENTITY '
            f"INCLUDING CONSTRAINTS) PARTITION BY RANGE (occurred_at)"
        )
        cursor.execute(f'ALTER TABLE "{table}" ADD PRIMARY KEY (id, occurred_at)')
        cursor.execute(f'CREATE TABLE "{table}_default" PARTITION OF "{table}" DEFAULT')
        _months_create(cursor, months_back=months_back)
        cursor.execute(f'INSERT INTO "{table}" SELECT * FROM "{old}"')
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
            f'COALESCE((SELECT MAX(id) FROM "{table}"), 0) + 1, false)'
        )
        cursor.execute(f'DROP TABLE "{old}"')
        for definition in indexes:
            cursor.execute(definition)
        for name, definition in foreign_keys:
            cursor.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')
    return True


def partitions_ensure(*, at: datetime | None = None) -> list[str]:
    """Create the monthly partitions from this month to ``MONTHS_AHEAD`` ahead that are
    missing; answers their names. Cheap when there is nothing to do."""
    if connection.vendor != "postgresql":
        return []
    with transaction.atomic(), connection.cursor() as cursor:
        if not is_partitioned(cursor):
            return []
        return _months_create(cursor, at=at, months_back=0)


def _months_create(cursor: Any, *, at: datetime | None = None, months_back: int) -> list[str]:
    at = at or timezone.now()
    table = _table()
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass",
        [table],
    )
    existing = {row[0] for row in cursor.fetchall()}
    created = []
    for shift in range(-months_back, MONTHS_AHEAD + 1):
        start, end = _month(at, shift), _month(at, shift + 1)
        name = _name(start)
        if name in existing:
            continue
        # Rows the DEFAULT partition took for this month move into it: PostgreSQL refuses
        # a partition whose rows the default partition holds.
        cursor.execute(
            f'CREATE TABLE "{name}" (LIKE "{table}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
        )
        cursor.execute(
            f'WITH moved AS (DELETE FROM "{table}_default" WHERE occurred_at >= %s '
            f'AND occurred_at < %s RETURNING *) INSERT INTO "{name}" SELECT * FROM moved',
            [start, end],
        )
        cursor.execute(
            f'ALTER TABLE "{table}" ATTACH PARTITION "{name}" FOR VALUES FROM (%s) TO (%s)',
            [start, end],
        )
        created.append(name)
    return created


class RetentionRefused(Exception):
    pass


def events_drop_before(*, month: datetime) -> list[str]:
    """Drop the monthly partitions wholly before ``month``, and with them the counters of
    quota windows that ended before it and the idempotency keys recorded before it, so
    counters still equal their events. Refused while usage before ``month`` may still be
    needed: late usage (``BILLING_LATE_USAGE_WINDOW``) and adjustments reach back that far
    from the last close, and a period that ended before ``month`` without its record
    would lose its events."""
    cutoff = _month(month)
    latest_allowed = _month(
        timezone.now() - billing_settings.LATE_USAGE_WINDOW - timedelta(days=31)
    )
    if cutoff > latest_allowed:
        raise RetentionRefused(
            f"Events from {cutoff:%Y-%m} on may still be needed (late usage, adjustments): "
            f"keep at least back to {latest_allowed:%Y-%m}."
        )
    if BillingPeriod.objects.filter(start__lt=cutoff, record__isnull=True).exists():
        raise RetentionRefused(
            "A billing period before that month has no usage record yet: run "
            "billing_close_cycles first."
        )
    if UsageCounter.objects.filter(window_start__lt=cutoff, window_end__gt=cutoff).exists():
        raise RetentionRefused(
            f"A quota window (a yearly quota, say) spans {cutoff:%Y-%m}: its counter would "
            "no longer equal its events. Keep the months of every open window."
        )
    if connection.vendor != "postgresql":
        return []
    table = _table()
    dropped = []
    with transaction.atomic(), connection.cursor() as cursor:
        if not is_partitioned(cursor):
            return []
        # A table with deferred foreign-key checks pending cannot be dropped: check now.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass ORDER BY c.relname",
            [table],
        )
        for (name,) in cursor.fetchall():
            if name.endswith("_default") or name >= _name(cutoff):
                continue
            cursor.execute(f'DROP TABLE "{name}"')
            dropped.append(name)
        cursor.execute(f'DELETE FROM "{table}" WHERE occurred_at < %s', [cutoff])
        UsageCounter.objects.filter(window_end__lte=cutoff).delete()
        # A key recorded later than this cannot belong to an event before the cutoff.
        keys = IdempotencyKey._meta.db_table
        cursor.execute(
            f'DELETE FROM "{keys}" AS k WHERE k.created_at < %s AND NOT EXISTS '
            f'(SELECT 1 FROM "{table}" AS e WHERE e.customer_id = k.customer_id '
            "AND e.idempotency_key = k.key)",
            [cutoff + billing_settings.LATE_USAGE_WINDOW + timedelta(days=1)],
        )
    return dropped
