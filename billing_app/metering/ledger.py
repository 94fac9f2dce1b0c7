"""The usage ledger: the only writer of usage events, counters, rate counters, idempotency
keys, overage spend, and of the credit draws metered calls make.

A reservation admits a call only when, in one decision taken by the database:

- the customer's entitlement version is still the one the caller decided with,
- the kit's per-minute rate has room (when the primitive has one),
- the window's counter stays within the quota (``used + n <= limit``),
- past a quota that bills overage, the window's overage spend stays within the plan's
  spend cap (when it has one),
- the customer's credit balance covers the call (when the primitive costs credits),

and then raises the counters, draws the credits and writes the event: a chain of gates,
each taking its input from the one before, so a refusal writes nothing after it. On
PostgreSQL an unkeyed reservation (every metered call) is one statement in autocommit, the
gates chained by data-modifying CTEs: one round trip, no transaction to open or close. A
statement cannot roll back part of itself, so when a later gate refuses after an earlier
one has written, the statement fails on purpose (a division by zero, SQLSTATE 22012) and
PostgreSQL rolls all of it back. A keyed reservation, and every one on SQLite (which has no
data-modifying CTEs; it runs in process, so statements cost no round trip), runs the same
gates as statements in a short transaction instead.

Counters always equal the sum of their window's events and balances the sum of their
entries: each changes in the same statement or transaction as the other, including the
refund of a failed call.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any

from django.db import DataError, connection, transaction
from django.db.models import F
from django.utils import timezone

from ..conf import customer_model
from ..exceptions import Conflict, InvalidInput
from ..models import (
    CreditBalance,
    CreditEntry,
    EntitlementVersion,
    IdempotencyKey,
    OverageSpend,
    RateCounter,
    UsageCounter,
    UsageEvent,
)
from ..periods import Window, minute_window

MAX_BIGINT = 2**63 - 1


class Outcome(enum.Enum):
    RESERVED = "reserved"
    DUPLICATE = "duplicate"  # a known idempotency key: nothing changed
    STALE = "stale"  # the entitlement changed: rebuild it and try again
    OVER_RATE = "over_rate"
    OVER_QUOTA = "over_quota"
    OVER_CREDITS = "over_credits"
    OVER_SPEND = "over_spend"  # past the spend cap on billed overage
    # The balance is not up to date (a grant has started or expired since): bring it up to
    # date (``credits.credits_refresh``) and try again.
    CREDITS_STALE = "credits_stale"


@dataclass(frozen=True, slots=True)
class Reservation:
    event_id: int
    customer_id: Any
    primitive: str
    quantity: int
    window: Window
    used: int  # the window's usage after this call
    occurred_at: datetime
    idempotency_key: str = ""
    duplicate: bool = False
    # The quota it was measured against (reported even when usage past it is billed).
    limit: int | None = None
    # True when it was written inside a transaction the caller had open: a rollback of
    # that transaction undoes it, and nothing else may.
    in_transaction: bool = False
    # The credits it drew, and the balance they left.
    credits: int | None = None
    balance: int | None = None
    # What its overage added to the window's overage spend (minor units), when counted.
    spent: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: Outcome
    reservation: Reservation | None = None
    used: int = 0  # the counter as the refusal found it
    calls: int = 0  # the per-minute counter as the refusal found it
    balance: int = 0  # the credit balance as the refusal found it
    spent: Decimal | None = None  # the window's overage spend as the refusal found it


@dataclass(frozen=True, slots=True)
class Request:
    """One reservation to make: who, what, how much, where it counts, and the limits the
    caller's entitlement (at ``version``) gives."""

    customer_id: Any
    version: int
    primitive: str
    quantity: int
    occurred_at: datetime
    window: Window
    limit: int | None  # None: unlimited (or billed past it: overage)
    rate: int | None = None  # calls per minute, None: no rate limit
    quota: int | None = None  # the quota to report, even when usage past it is billed
    credits: int | None = None  # what the use costs in credits, None: it draws none
    # Past ``quota`` each unit is billed at ``overage_price``; the window's overage spend
    # may reach ``spend_cap`` at most. With a price and no cap (usage that already
    # happened) the spend is counted, never refused; without a price, not counted.
    overage_price: Decimal | None = None
    spend_cap: Decimal | None = None
    idempotency_key: str = ""
    fingerprint: str = ""


def fingerprint(*parts: Any) -> str:
    """What an idempotency key was sent with, hashed: the same key with another body is a
    conflict, not a duplicate."""
    return hashlib.sha256("|".join("" if p is None else str(p) for p in parts).encode()).hexdigest()


# --- reserve ---------------------------------------------------------------------------


def reserve(request: Request) -> Attempt:
    """Admit and record one use, or say why not. Never raises for a refusal; every
    outcome but STALE was decided against the entitlement version the caller holds."""
    if connection.vendor == "postgresql" and not request.idempotency_key:
        return _reserve_in_one_statement(request)
    return _reserve_in_transaction(request)


def _params(request: Request, now: datetime) -> dict[str, Any]:
    adapt = connection.ops.adapt_datetimefield_value
    limit = MAX_BIGINT if request.limit is None else request.limit
    return {
        "customer": customer_db_value(request.customer_id),
        "version": request.version,
        "primitive": request.primitive,
        "quantity": request.quantity,
        # The counter may take the call while it holds at most this much.
        "room": limit - request.quantity,
        "window_start": adapt(request.window.start),
        "window_end": adapt(request.window.end),
        "occurred_at": adapt(request.occurred_at),
        "recorded_at": adapt(now),
        "key": request.idempotency_key,
        "minute": adapt(minute_window(now).start),
        "rate": request.rate or 0,
        "credits": request.credits or 0,
        "draw": -(request.credits or 0),
        "quota": request.quota if request.quota is not None else MAX_BIGINT,
        "price": request.overage_price or 0,
        "cap": NO_CAP if request.spend_cap is None else request.spend_cap,
    }


# Larger than any spend a window can reach (a spend without a cap is counted, not capped).
NO_CAP = Decimal(10) ** 17


def overage_cost(request: Request, used: int) -> Decimal:
    """What a reservation that took the window's counter to ``used`` adds to the
    overage spend: its units past the quota at the overage price."""
    if request.overage_price is None or request.quota is None:
        return Decimal(0)
    units = min(request.quantity, max(0, used - request.quota))
    return units * request.overage_price


@cache
def _tables() -> dict[str, str]:
    return {
        "versions": EntitlementVersion._meta.db_table,
        "counters": UsageCounter._meta.db_table,
        "events": UsageEvent._meta.db_table,
        "rates": RateCounter._meta.db_table,
        "keys": IdempotencyKey._meta.db_table,
        "balances": CreditBalance._meta.db_table,
        "entries": CreditEntry._meta.db_table,
        "spend": OverageSpend._meta.db_table,
    }


# The gates, shared by both ways of running them. ``{source}`` is where a gate takes its
# input from: the gate before it, so a refusal anywhere writes nothing after it.
_VERSION_OK = (
    "COALESCE((SELECT version FROM {versions} WHERE customer_id = %(customer)s), 0) = %(version)s"
)
_RATE = (
    "INSERT INTO {rates} AS r (customer_id, primitive, minute, calls) "
    "SELECT %(customer)s, %(primitive)s, %(minute)s, 1 {source} "
    "ON CONFLICT (customer_id, primitive) DO UPDATE "
    "SET minute = excluded.minute, "
    "calls = CASE WHEN r.minute = excluded.minute THEN r.calls + 1 ELSE 1 END "
    "WHERE r.minute <> excluded.minute OR r.calls < %(rate)s "
    "RETURNING calls"
)
_COUNTER = (
    "INSERT INTO {counters} AS c (customer_id, primitive, window_start, window_end, used) "
    "SELECT %(customer)s, %(primitive)s, %(window_start)s, %(window_end)s, %(quantity)s "
    "{source} "
    "ON CONFLICT (customer_id, primitive, window_start) DO UPDATE "
    "SET used = c.used + excluded.used WHERE c.used <= %(room)s "
    "RETURNING used"
)
_CREDIT = (
    "UPDATE {balances} SET balance = balance - %(credits)s "
    "WHERE customer_id = %(customer)s AND balance >= %(credits)s "
    "AND (valid_until IS NULL OR valid_until > %(recorded_at)s) {source} "
    "RETURNING balance"
)
# What the call's units past the quota cost, from the counter the call just raised.
_COST = "LEAST(%(quantity)s, GREATEST(0, used - %(quota)s)) * CAST(%(price)s AS NUMERIC)"
_SPEND = (
    "INSERT INTO {spend} AS s (customer_id, window_start, window_end, spent) "
    "SELECT %(customer)s, %(window_start)s, %(window_end)s, {cost} {source} "
    "ON CONFLICT (customer_id, window_start) DO UPDATE SET spent = s.spent + excluded.spent "
    "WHERE s.spent + excluded.spent <= CAST(%(cap)s AS NUMERIC) "
    "RETURNING spent"
)
_EVENT = (
    "INSERT INTO {events} "
    "(customer_id, primitive, quantity, occurred_at, recorded_at, window_start, idempotency_key) "
    "SELECT %(customer)s, %(primitive)s, %(quantity)s, %(occurred_at)s, %(recorded_at)s, "
    "%(window_start)s, %(key)s {source} "
    "RETURNING id"
)
_DRAW = (
    "INSERT INTO {entries} (customer_id, delta, kind, event_id, primitive, at) "
    "SELECT %(customer)s, %(draw)s, 'draw', {event_id}, %(primitive)s, %(recorded_at)s {source}"
)
_USED = (
    "SELECT used FROM {counters} WHERE customer_id = %(customer)s "
    "AND primitive = %(primitive)s AND window_start = %(window_start)s"
)
# The division by zero that rolls a statement back (22012). It divides by a count the
# planner cannot know, so it happens only when the CASE takes that branch.
DIVISION_BY_ZERO = "22012"


def _sql(template: str, source: str, **names: str) -> str:
    return template.format(source=source, **_tables(), **names)


@cache
def _one_statement(with_rate: bool, with_credits: bool, with_spend: bool = False) -> str:
    """The PostgreSQL reservation in one statement, answering (version ok, calls this
    minute, used after, balance after, event id, used as found, spend after)."""
    parts = ["fresh AS (SELECT 1 AS ok WHERE " + _sql(_VERSION_OK, "") + ")"]
    written = []
    gate = "FROM fresh"
    if with_rate:
        parts.append("rate AS (" + _sql(_RATE, gate) + ")")
        gate, written = "FROM rate", ["rate"]
    parts.append("counter AS (" + _sql(_COUNTER, gate + " WHERE %(room)s >= 0") + ")")
    gate = "FROM counter"
    written.append("counter")
    passed = "EXISTS (SELECT 1 FROM counter)"
    if with_spend:
        # Only a call past the quota touches the spend row; the rest pass this gate.
        cap = "CAST(%(cap)s AS NUMERIC)"
        spend = _sql(_SPEND, f"FROM counter WHERE {_COST} > 0 AND {_COST} <= {cap}", cost=_COST)
        parts.append("spend AS (" + spend + ")")
        written.append("spend")
        passed = f"EXISTS (SELECT 1 FROM counter WHERE {_COST} = 0) OR EXISTS (SELECT 1 FROM spend)"
        gate = f"FROM counter WHERE {passed}"
    if with_credits:
        parts.append("credit AS (" + _sql(_CREDIT, f"AND ({passed})") + ")")
        gate = "FROM credit"
    parts.append("event AS (" + _sql(_EVENT, gate) + ")")
    if with_credits:
        parts.append("draw AS (" + _sql(_DRAW, "FROM event", event_id="id") + ")")
    # A gate refused after an earlier one wrote: fail, so that nothing remains of it.
    any_written = " OR ".join(f"EXISTS (SELECT 1 FROM {name})" for name in written)
    undo = (
        f"CASE WHEN NOT EXISTS (SELECT 1 FROM event) AND ({any_written}) "
        "THEN 1 / (SELECT count(*) FROM event) END"
    )
    calls = "(SELECT calls FROM rate)" if with_rate else "NULL"
    balance = "(SELECT balance FROM credit)" if with_credits else "NULL"
    spent = "(SELECT spent FROM spend)" if with_spend else "NULL"
    return (
        "WITH "
        + ", ".join(parts)
        + f" SELECT (SELECT ok FROM fresh), {calls}, (SELECT used FROM counter), {balance}, "
        + "(SELECT id FROM event), ("
        + _sql(_USED, "")
        + f"), {spent}, {undo}"
    )


def _reserve_in_one_statement(request: Request) -> Attempt:
    in_transaction = connection.in_atomic_block
    statement = _one_statement(
        request.rate is not None, request.credits is not None, request.overage_price is not None
    )
    # In autocommit a failing statement rolls back alone; inside the caller's transaction
    # a savepoint keeps that transaction usable.
    guard = transaction.atomic() if in_transaction else nullcontext()
    try:
        with guard, _server_bound_cursor() as cursor:
            cursor.execute(statement, _params(request, timezone.now()))
            fresh, calls, used, balance, event_id, found, _, _ = cursor.fetchone()
    except DataError as error:
        if _sqlstate(error) == DIVISION_BY_ZERO:
            return _diagnose(request)
        raise _overflow() from None
    if not fresh:
        return Attempt(Outcome.STALE)
    if request.rate is not None and calls is None:
        return Attempt(Outcome.OVER_RATE, calls=request.rate, used=found or 0)
    if event_id is None:
        return _refused_by_counter(request, found or 0)
    reservation = _reservation(request, event_id, used, in_transaction, balance)
    return Attempt(Outcome.RESERVED, reservation)


@contextmanager
def _server_bound_cursor() -> Iterator[Any]:
    """A psycopg cursor that sends the parameters apart from the statement (server-side
    binding) on Django's own connection, in its transaction state. Django's cursors bind
    on the client, which for this statement's twenty parameters costs more client CPU than
    the rest of a metered call; the statement is the same either way. It is not prepared,
    so PgBouncer in transaction mode works. Django's execute wrappers and query log do not
    see it."""
    import psycopg  # only on PostgreSQL: the app does not require it

    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        yield cursor


def _sqlstate(error: Exception) -> str | None:
    return getattr(error.__cause__, "sqlstate", None)


class _Refused(Exception):
    """Rolls back a reservation's transaction."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


def _reserve_in_transaction(request: Request) -> Attempt:
    """The same gates as statements in a transaction. The first statement writes, so
    SQLite takes its write lock at once instead of upgrading a read lock later."""
    now = timezone.now()
    params = _params(request, now)
    in_transaction = connection.in_atomic_block
    fresh = "WHERE " + _sql(_VERSION_OK, "")
    balance = None
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            if request.idempotency_key and not _claim_key(cursor, request, now):
                raise _Refused(Outcome.DUPLICATE)
            if request.rate is not None:
                cursor.execute(_sql(_RATE, fresh), params)
                if cursor.fetchone() is None:
                    raise _Refused(Outcome.OVER_RATE)
            cursor.execute(_sql(_COUNTER, fresh + " AND %(room)s >= 0"), params)
            counted = cursor.fetchone()
            if counted is None:
                raise _Refused(Outcome.OVER_QUOTA)
            cost = overage_cost(request, counted[0])
            if cost:
                # Decided here from the counter's answer, so the spend takes an exact
                # decimal (SQLite keeps decimals as floating point).
                spend = _sql(
                    _SPEND,
                    "WHERE CAST(%(cost)s AS NUMERIC) <= CAST(%(cap)s AS NUMERIC)",
                    cost="CAST(%(cost)s AS NUMERIC)",
                )
                cursor.execute(spend, {**params, "cost": cost})
                if cursor.fetchone() is None:
                    raise _Refused(Outcome.OVER_SPEND)
            if request.credits is not None:
                cursor.execute(_sql(_CREDIT, ""), params)
                drawn = cursor.fetchone()
                if drawn is None:
                    raise _Refused(Outcome.OVER_CREDITS)
                balance = drawn[0]
            cursor.execute(_sql(_EVENT, ""), params)
            (event_id,) = cursor.fetchone()
            if request.credits is not None:
                cursor.execute(_sql(_DRAW, "", event_id=str(int(event_id))), params)
    except DataError:
        raise _overflow() from None
    except _Refused as refused:
        if refused.outcome is Outcome.DUPLICATE:
            return Attempt(Outcome.DUPLICATE, replay(request))
        return _diagnose(request)
    reservation = _reservation(request, event_id, counted[0], in_transaction, balance)
    return Attempt(Outcome.RESERVED, reservation)


def _diagnose(request: Request) -> Attempt:
    """Which gate refused, once the refusal has rolled back: read what it read."""
    if version_of(request.customer_id) != request.version:
        return Attempt(Outcome.STALE)
    used = _used(request)
    if request.rate is not None and _calls_this_minute(request) >= request.rate:
        return Attempt(Outcome.OVER_RATE, calls=request.rate, used=used)
    if request.limit is not None and used + request.quantity > request.limit:
        return Attempt(Outcome.OVER_QUOTA, used=used)
    cost = overage_cost(request, used + request.quantity)
    if cost:
        spent = spent_in(customer_id=request.customer_id, window=request.window)
        cap = NO_CAP if request.spend_cap is None else request.spend_cap
        if spent + cost > cap:
            return Attempt(Outcome.OVER_SPEND, used=used, spent=spent)
    if request.credits is not None:
        row = CreditBalance.objects.filter(customer_id=request.customer_id).first()
        if row is None or (row.valid_until is not None and row.valid_until <= timezone.now()):
            return Attempt(Outcome.CREDITS_STALE)
        if row.balance < request.credits:
            return Attempt(Outcome.OVER_CREDITS, used=used, balance=row.balance)
    if request.limit is None and used > MAX_BIGINT - request.quantity:
        raise _overflow()  # an unlimited counter refuses only when it would overflow
    # The state moved between the refusal and this read: decide again.
    return Attempt(Outcome.STALE)


def _calls_this_minute(request: Request) -> int:
    row = RateCounter.objects.filter(
        customer_id=request.customer_id, primitive=request.primitive
    ).first()
    if row is None or row.minute != minute_window(timezone.now()).start:
        return 0
    return row.calls


def _claim_key(cursor: Any, request: Request, now: datetime) -> bool:
    """Insert the key, or wait for a concurrent holder of it and find it taken."""
    cursor.execute(
        f"INSERT INTO {_tables()['keys']} (customer_id, key, fingerprint, created_at) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (customer_id, key) DO NOTHING RETURNING id",
        [
            customer_db_value(request.customer_id),
            request.idempotency_key,
            request.fingerprint,
            connection.ops.adapt_datetimefield_value(now),
        ],
    )
    return cursor.fetchone() is not None


def _refused_by_counter(request: Request, used: int) -> Attempt:
    if request.limit is None:
        raise _overflow()  # an unlimited counter refuses only when it would overflow
    return Attempt(Outcome.OVER_QUOTA, used=used)


def _overflow() -> InvalidInput:
    return InvalidInput({"quantity": ["The window's counter cannot hold that much more."]})


def _reservation(
    request: Request, event_id: int, used: int, in_transaction: bool, balance: int | None
) -> Reservation:
    cost = overage_cost(request, used)
    return Reservation(
        event_id=event_id,
        customer_id=request.customer_id,
        primitive=request.primitive,
        quantity=request.quantity,
        window=request.window,
        used=used,
        occurred_at=request.occurred_at,
        idempotency_key=request.idempotency_key,
        in_transaction=in_transaction,
        credits=request.credits,
        balance=balance,
        limit=request.quota,
        spent=cost or None,
    )


def _used(request: Request) -> int:
    return used_in(
        customer_id=request.customer_id, primitive=request.primitive, window=request.window
    )


def used_in(*, customer_id: Any, primitive: str, window: Window) -> int:
    used = (
        UsageCounter.objects.filter(
            customer_id=customer_id, primitive=primitive, window_start=window.start
        )
        .values_list("used", flat=True)
        .first()
    )
    return used or 0


def spent_in(*, customer_id: Any, window: Window) -> Decimal:
    """The overage spend of the customer's quota ``window`` so far (minor units)."""
    spent = (
        OverageSpend.objects.filter(customer_id=customer_id, window_start=window.start)
        .values_list("spent", flat=True)
        .first()
    )
    return Decimal(spent or 0)


def version_of(customer_id: Any) -> int:
    version = (
        EntitlementVersion.objects.filter(customer_id=customer_id)
        .values_list("version", flat=True)
        .first()
    )
    return version or 0


def replay(request: Request) -> Reservation:
    """The first recording of a known idempotency key, or ``Conflict`` when the key was
    sent before with another body."""
    known = IdempotencyKey.objects.get(customer_id=request.customer_id, key=request.idempotency_key)
    if known.fingerprint != request.fingerprint:
        raise Conflict(
            f"{request.idempotency_key!r} was used before with a different request.",
            fields={"idempotency_key": ["Used before with a different request."]},
        )
    event = UsageEvent.objects.get(
        customer_id=request.customer_id, idempotency_key=request.idempotency_key
    )
    counter = UsageCounter.objects.get(
        customer_id=event.customer_id, primitive=event.primitive, window_start=event.window_start
    )
    return Reservation(
        event_id=event.pk,
        customer_id=request.customer_id,
        primitive=event.primitive,
        quantity=event.quantity,
        window=Window(counter.window_start, counter.window_end),
        used=counter.used,
        occurred_at=event.occurred_at,
        idempotency_key=request.idempotency_key,
        duplicate=True,
    )


# --- refund ----------------------------------------------------------------------------


def refund(reservation: Reservation) -> None:
    """Undo a reservation whose call failed: its event goes, its counter comes down, its
    idempotency key is forgotten (so a retry with it is recorded), its credits come back."""
    if reservation.duplicate:
        return
    tables = _tables()
    adapt = connection.ops.adapt_datetimefield_value
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {tables['events']} WHERE id = %s AND occurred_at = %s RETURNING id",
            [reservation.event_id, adapt(reservation.occurred_at)],
        )
        if cursor.fetchone() is None:
            return  # refunded already
        cursor.execute(
            f"UPDATE {tables['counters']} SET used = used - %s WHERE customer_id = %s "
            "AND primitive = %s AND window_start = %s",
            [
                reservation.quantity,
                customer_db_value(reservation.customer_id),
                reservation.primitive,
                adapt(reservation.window.start),
            ],
        )
        if reservation.spent:
            cursor.execute(
                f"UPDATE {tables['spend']} SET spent = spent - CAST(%s AS NUMERIC) "
                "WHERE customer_id = %s AND window_start = %s",
                [
                    reservation.spent,
                    customer_db_value(reservation.customer_id),
                    adapt(reservation.window.start),
                ],
            )
        if reservation.idempotency_key:
            IdempotencyKey.objects.filter(
                customer_id=reservation.customer_id, key=reservation.idempotency_key
            ).delete()
        if reservation.credits:
            # Entries are append-only: the draw stays, and a refund entry answers it.
            CreditEntry.objects.create(
                customer_id=reservation.customer_id,
                delta=reservation.credits,
                kind=CreditEntry.Kind.REFUND,
                event_id=reservation.event_id,
                primitive=reservation.primitive,
                at=timezone.now(),
            )
            CreditBalance.objects.filter(customer_id=reservation.customer_id).update(
                balance=F("balance") + reservation.credits
            )


# --- batches ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    """One valid event of a batch, ready to write."""

    customer_id: Any
    primitive: str
    quantity: int
    occurred_at: datetime
    window: Window
    idempotency_key: str
    fingerprint: str


def ingest(
    items: Sequence[Item],
    overage: Mapping[tuple[Any, str, Window], tuple[int, Decimal]] | None = None,
) -> tuple[list[tuple[str, int]], dict[tuple[Any, str, Window], int]]:
    """Write a batch of reported usage in one transaction. Reported usage already
    happened, so it is recorded whatever the quota (overage). Answers ("created" |
    "duplicate" | "conflict", event id) per item, in order, and each counter's value after
    the batch (for usage alerts). ``overage`` ((customer, primitive, window) -> (quota,
    price)) names the counters whose overage counts against a spend cap: what the batch
    took past their quota is added to the window's spend, in the same transaction, never
    refused (it happened)."""
    if not items:
        return [], {}
    adapt = connection.ops.adapt_datetimefield_value
    now = adapt(timezone.now())
    tables = _tables()
    markers = [_marker(item) for item in items]
    with transaction.atomic(), _batch_cursor() as cursor:
        claimed = _claim_keys(cursor, items, markers, now)
        # Unkeyed events, and the first of each key this batch claimed.
        to_write, taken = [], set()
        for index, marker in enumerate(markers):
            if marker is None or (marker in claimed and marker not in taken):
                to_write.append(index)
                taken.add(marker)
        ids: dict[int, int] = {}
        if to_write:
            db_ids = {c: customer_db_value(c) for c in {items[i].customer_id for i in to_write}}
            source, params = rows_source(
                UsageEvent,
                EVENT_COLUMNS,
                [
                    (
                        db_ids[items[i].customer_id],
                        items[i].primitive,
                        items[i].quantity,
                        adapt(items[i].occurred_at),
                        now,
                        adapt(items[i].window.start),
                        items[i].idempotency_key,
                    )
                    for i in to_write
                ],
            )
            columns = ", ".join(
                f"{name}_id" if name == "customer" else name for name in EVENT_COLUMNS
            )
            cursor.execute(
                f"INSERT INTO {tables['events']} ({columns}) {source} RETURNING id", params
            )
            # Rows come back in the order sent, as Django's bulk_create also relies on.
            ids = dict(zip(to_write, (row[0] for row in cursor.fetchall()), strict=True))
        after = _counters_add(cursor, [items[i] for i in to_write])
        if overage:
            _spend_add(cursor, [items[i] for i in to_write], after, overage)
    results: list[tuple[str, int]] = []
    first = {
        marker: (ids[i], items[i].fingerprint)
        for i in to_write
        if (marker := markers[i]) is not None
    }
    unknown = {m for m in markers if m is not None and m not in first}
    first.update(_known_keys(unknown))
    for index, (item, marker) in enumerate(zip(items, markers, strict=True)):
        if marker is None or index in ids:  # an event without a key is always written
            results.append(("created", ids[index]))
        else:
            event_id, first_fingerprint = first[marker]
            same = first_fingerprint == item.fingerprint
            results.append(("duplicate" if same else "conflict", event_id))
    return results, after


def _spend_add(
    cursor: Any,
    written: Sequence[Item],
    after: Mapping[tuple[Any, str, Window], int],
    overage: Mapping[tuple[Any, str, Window], tuple[int, Decimal]],
) -> None:
    """Add to each window's overage spend what the batch took its counters past their
    quota, at their price."""
    added: dict[tuple[Any, str, Window], int] = {}
    for item in written:
        key = (item.customer_id, item.primitive, item.window)
        added[key] = added.get(key, 0) + item.quantity
    costs: dict[tuple[Any, Window], Decimal] = {}
    for key, quantity in added.items():
        if key not in overage or key not in after:
            continue
        quota, price = overage[key]
        used = after[key]
        units = max(0, used - quota) - max(0, used - quantity - quota)
        if units:
            costs[(key[0], key[2])] = costs.get((key[0], key[2]), Decimal(0)) + units * price
    adapt = connection.ops.adapt_datetimefield_value
    spend = _sql(
        _SPEND,
        "WHERE CAST(%(cost)s AS NUMERIC) <= CAST(%(cap)s AS NUMERIC)",
        cost="CAST(%(cost)s AS NUMERIC)",
    )
    # Sorted, so concurrent batches lock shared spend rows in the same order.
    for (customer_id, window), cost in sorted(
        costs.items(), key=lambda kv: (str(kv[0][0]), kv[0][1].start)
    ):
        cursor.execute(
            spend,
            {
                "customer": customer_db_value(customer_id),
                "window_start": adapt(window.start),
                "window_end": adapt(window.end),
                "cost": cost,
                "cap": NO_CAP,
            },
        )


def _batch_cursor() -> Any:
    """On PostgreSQL the batch's arrays go as parameters apart from the statement, in
    psycopg's binary format: dumping thousands of timestamps as text costs more than the
    insert."""
    return _server_bound_cursor() if connection.vendor == "postgresql" else connection.cursor()


EVENT_COLUMNS = (
    "customer",
    "primitive",
    "quantity",
    "occurred_at",
    "recorded_at",
    "window_start",
    "idempotency_key",
)


def _marker(item: Item) -> tuple[str, str] | None:
    if not item.idempotency_key:
        return None
    return str(customer_db_value(item.customer_id)), item.idempotency_key


def _claim_keys(
    cursor: Any, items: Sequence[Item], markers: list[tuple[str, str] | None], now: Any
) -> set[tuple[str, str]]:
    """Insert the batch's keys; answers those that were new. Sorted, so concurrent
    batches that share keys take their locks in one order and never deadlock."""
    rows = {}
    for item, marker in zip(items, markers, strict=True):
        if marker is not None and marker not in rows:
            rows[marker] = (
                customer_db_value(item.customer_id),
                item.idempotency_key,
                item.fingerprint,
                now,
            )
    if not rows:
        return set()
    source, params = rows_source(
        IdempotencyKey,
        ("customer", "key", "fingerprint", "created_at"),
        [rows[marker] for marker in sorted(rows)],
    )
    cursor.execute(
        f"INSERT INTO {_tables()['keys']} (customer_id, key, fingerprint, created_at) "
        f"{source} ON CONFLICT (customer_id, key) DO NOTHING RETURNING customer_id, key",
        params,
    )
    return {(str(c), k) for c, k in cursor.fetchall()}


def _known_keys(markers: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, str]]:
    """The first event and fingerprint of keys recorded before this batch."""
    if not markers:
        return {}
    if connection.vendor == "postgresql":
        return _known_keys_joined(markers)
    customers = {c for c, _ in markers}
    keys = {k for _, k in markers}
    fingerprints = {
        (str(customer_db_value(c)), k): f
        for c, k, f in IdempotencyKey.objects.filter(
            customer_id__in=customers, key__in=keys
        ).values_list("customer_id", "key", "fingerprint")
    }
    events = {
        (str(customer_db_value(c)), k): pk
        for c, k, pk in UsageEvent.objects.filter(
            customer_id__in=customers, idempotency_key__in=keys
        ).values_list("customer_id", "idempotency_key", "pk")
    }
    return {m: (events[m], fingerprints[m]) for m in markers}


def _known_keys_joined(markers: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, str]]:
    """The same in one statement: the markers as two arrays, joined to keys and events."""
    tables = _tables()
    kind = _array_type(IdempotencyKey._meta.get_field("customer").db_type(connection) or "")
    pk = _customer_pk()
    customers = [pk.to_python(c) for c, _ in markers]
    with _server_bound_cursor() as cursor:
        cursor.execute(
            f"SELECT k.customer_id, k.key, e.id, k.fingerprint "
            f"FROM unnest(%b::{kind}[], %b::varchar[]) AS m (customer_id, key) "
            f"JOIN {tables['keys']} k ON k.customer_id = m.customer_id AND k.key = m.key "
            f"JOIN {tables['events']} e ON e.customer_id = k.customer_id "
            "AND e.idempotency_key = k.key",
            [customers, [k for _, k in markers]],
        )
        return {(str(c), k): (event_id, f) for c, k, event_id, f in cursor.fetchall()}


def _counters_add(cursor: Any, items: Iterable[Item]) -> dict[tuple[Any, str, Window], int]:
    totals: dict[tuple[Any, str, Window], int] = {}
    for item in items:
        key = (item.customer_id, item.primitive, item.window)
        totals[key] = totals.get(key, 0) + item.quantity
    if not totals:
        return {}
    full = InvalidInput({"events": ["A counter cannot hold that much more usage."]})
    if max(totals.values()) > MAX_BIGINT:
        raise full
    adapt = connection.ops.adapt_datetimefield_value
    table = _tables()["counters"]
    # Sorted, so concurrent batches lock shared counter rows in the same order.
    ordered = sorted(totals.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2].start))
    source, params = rows_source(
        UsageCounter,
        ("customer", "primitive", "window_start", "window_end", "used"),
        [
            (customer_db_value(c), p, adapt(w.start), adapt(w.end), used)
            for (c, p, w), used in ordered
        ],
    )
    # A counter the batch would take past its column's range is left as it is (SQLite would
    # turn the sum into a float, PostgreSQL fail): it returns no row, and the batch fails.
    cursor.execute(
        f"INSERT INTO {table} AS c (customer_id, primitive, window_start, window_end, used) "
        f"{source} ON CONFLICT (customer_id, primitive, window_start) DO UPDATE "
        f"SET used = c.used + excluded.used WHERE c.used <= {MAX_BIGINT} - excluded.used "
        "RETURNING customer_id, primitive, window_start, used",
        params,
    )
    rows = cursor.fetchall()
    if len(rows) < len(totals):
        raise full
    by_start = {(str(customer_db_value(c)), p, w.start): (c, p, w) for (c, p, w) in totals}
    after = {}
    for c, p, start, used in rows:
        counter = by_start.get((str(c), p, as_aware(start)))
        if counter is not None:
            after[counter] = used
    return after


def rows_source(model: Any, names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Any:
    """``rows`` as the source of an ``INSERT``, and its parameters. On PostgreSQL one array
    per column in psycopg's binary format (for the server-bound cursor of
    :func:`_batch_cursor`): a statement with thousands of placeholders, or arrays dumped
    as quoted text, costs more than the insert."""
    if connection.vendor == "postgresql":
        by_name = {f.name: f for f in model._meta.concrete_fields}
        types = [_array_type(by_name[name].db_type(connection) or "") for name in names]
        arrays = ", ".join(f"%b::{kind}[]" for kind in types)
        return f"SELECT * FROM unnest({arrays})", [list(c) for c in zip(*rows, strict=True)]
    row = "(" + ", ".join(["%s"] * len(names)) + ")"
    return "SELECT * FROM (VALUES " + ", ".join([row] * len(rows)) + ") WHERE true", [
        value for row in rows for value in row
    ]


def _array_type(kind: str) -> str:
    kind = kind.split("(")[0]
    return {"serial": "integer", "bigserial": "bigint"}.get(kind, kind)


def as_aware(value: Any) -> datetime:
    """A timestamp from a raw cursor (SQLite gives naive or text) as an aware datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return timezone.make_aware(value, UTC) if timezone.is_naive(value) else value


@cache
def _customer_pk() -> Any:
    return customer_model()._meta.pk


def customer_db_value(customer_id: Any) -> Any:
    """A customer's key as the database takes it in raw SQL (a UUID is text on SQLite)."""
    return _db_value(connection.vendor, customer_id)


@lru_cache(maxsize=10_000)
def _db_value(vendor: str, customer_id: Any) -> Any:
    pk = _customer_pk()
    return pk.get_db_prep_value(pk.to_python(customer_id), connection, prepared=False)


def counters_of(customer_id: Any, window_start: datetime) -> Mapping[str, int]:
    return dict(
        UsageCounter.objects.filter(customer_id=customer_id, window_start=window_start)
        .order_by("primitive")
        .values_list("primitive", "used")
    )
