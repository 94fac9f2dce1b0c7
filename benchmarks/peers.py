"""ADAPT HERE when billing_app's metering tables change.

Every table name, column name and piece of raw SQL that benchmarks/ relies on is in this
file, and nowhere else: the two peer meters that the app is measured against (``floor`` and
``sfu``, written without the app's code, so they must know its tables) and the SQL that
checks exactness after a run. The app's own variants (``@metered``, ``MeteredMixin``) go
through the app and need no change here.

If the counter or event tables are renamed, split or get new NOT NULL columns, change the
four functions below and nothing else. Each peer must keep doing what the app promises:
one event row per charged call and a counter that never passes the limit, durably, in one
transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from billing_app.models import UsageCounter, UsageEvent

# --- floor: the least an exact, durable meter can do --------------------------------------
# One statement, one round trip, one commit: raise the window's counter only while it stays
# within the limit (the database checks the condition on the locked row, so it is exact
# under concurrency) and, only if it did, insert the event. Returns the counter's new value.


def _floor_sql() -> str:
    counter = UsageCounter._meta.db_table
    event = UsageEvent._meta.db_table
    return (
        "WITH c AS ("
        f" INSERT INTO {counter} (customer_id, primitive, window_start, window_end, used)"
        " VALUES (%(user)s, %(primitive)s, date_trunc('month', now()),"
        "         date_trunc('month', now()) + interval '1 month', 1)"
        " ON CONFLICT (customer_id, primitive, window_start) DO UPDATE"
        f" SET used = {counter}.used + 1 WHERE {counter}.used + 1 <= %(limit)s"
        " RETURNING used, window_start),"
        " e AS ("
        f" INSERT INTO {event} (customer_id, primitive, quantity, occurred_at, recorded_at,"
        " window_start, idempotency_key)"
        " SELECT %(user)s, %(primitive)s, 1, now(), now(), c.window_start, '' FROM c)"
        " SELECT used FROM c"
    )


def floor_charge(*, customer_id: Any, primitive: str, limit: int) -> int | None:
    """Charge one call; the counter after it, or None when the limit refuses it."""
    with connection.cursor() as cursor:
        cursor.execute(_floor_sql(), {"user": customer_id, "primitive": primitive, "limit": limit})
        row = cursor.fetchone()
    return None if row is None else row[0]


# --- sfu: what a Django developer writes by hand -------------------------------------------
# The ORM, in a transaction: lock the window's counter row (creating it the first time),
# check, increment, and write the event. Exact (the row lock serialises the check) and
# durable, at five round trips: SELECT ... FOR UPDATE, UPDATE, INSERT, and BEGIN/COMMIT.


def _month(now: datetime) -> tuple[datetime, datetime]:
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, (start + timedelta(days=32)).replace(day=1)


def sfu_charge(*, customer_id: Any, primitive: str, limit: int) -> int | None:
    """Charge one call; the counter after it, or None when the limit refuses it."""
    now = timezone.now()
    start, end = _month(now)
    with transaction.atomic():
        counter, _ = UsageCounter.objects.select_for_update().get_or_create(
            customer_id=customer_id,
            primitive=primitive,
            window_start=start,
            defaults={"window_end": end},
        )
        if counter.used + 1 > limit:
            return None
        counter.used += 1
        counter.save(update_fields=["used"])
        UsageEvent.objects.create(
            customer_id=customer_id,
            primitive=primitive,
            quantity=1,
            occurred_at=now,
            recorded_at=now,
            window_start=start,
        )
    return counter.used


# --- exactness checks (side_by_side.py, after the rounds) ----------------------------------


def usage_by_primitive(*, customer_id: Any) -> dict[str, dict[str, int]]:
    """Per primitive of the tenant: the sum of its counters, its event rows and the sum of
    their quantities, over every window. One statement, so one snapshot: a call that
    commits meanwhile is in both sums or in neither."""
    counter = UsageCounter._meta.db_table
    event = UsageEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH c AS ("
            f" SELECT primitive, sum(used) AS used FROM {counter} WHERE customer_id = %(user)s"
            " GROUP BY primitive),"
            " e AS ("
            " SELECT primitive, count(*) AS events, sum(quantity) AS quantity"
            f" FROM {event} WHERE customer_id = %(user)s GROUP BY primitive)"
            " SELECT coalesce(c.primitive, e.primitive), coalesce(c.used, 0),"
            " coalesce(e.events, 0), coalesce(e.quantity, 0)"
            " FROM c FULL OUTER JOIN e ON c.primitive = e.primitive",
            {"user": customer_id},
        )
        return {
            primitive: {"counter": int(used), "events": int(events), "quantity": int(quantity)}
            for primitive, used, events, quantity in cursor.fetchall()
        }
