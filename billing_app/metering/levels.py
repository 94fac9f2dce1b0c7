"""Gauges: the only writer of gauge levels and gauge events.

A gauge (storage in bytes, say) is a level that goes up and down and has no window. A
change is admitted, in one decision taken by the database on the locked level row, when

- it does not raise the level (a decrease always succeeds, and never goes below zero), or
- the customer's entitlement version is still the one the caller decided with, and the
  level stays within the limit (``level + n <= limit``),

and then the level changes and the change's event is written. As in ``metering.ledger``:
on PostgreSQL an unkeyed change is one statement in autocommit, its parts chained by
data-modifying CTEs; a keyed one, and every one on SQLite, runs the same conditional
statements in a short transaction whose first statement writes.

The level always equals the sum of its events' deltas: both change in the same statement
or transaction. An unkeyed change that changes nothing (taking from an empty gauge, setting
the level it has) writes no event; a keyed one does, so that its key is remembered.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from ..exceptions import Conflict
from ..models import EntitlementVersion, GaugeEvent, GaugeLevel
from .ledger import MAX_BIGINT, as_aware, customer_db_value, version_of

ADD, SUBTRACT, SET = GaugeEvent.Op.ADD, GaugeEvent.Op.SUBTRACT, GaugeEvent.Op.SET


class Outcome(enum.Enum):
    CHANGED = "changed"
    DUPLICATE = "duplicate"  # a known idempotency key: nothing changed
    STALE = "stale"  # the entitlement changed: rebuild it and try again
    OVER_LIMIT = "over_limit"


@dataclass(frozen=True, slots=True)
class Change:
    """One change to make: who, which gauge, what, and the limit the caller's entitlement
    (at ``version``) gives."""

    customer_id: Any
    version: int
    primitive: str
    op: str
    amount: int
    limit: int | None  # None: unlimited (or billed past it: overage)
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class Changed:
    customer_id: Any
    primitive: str
    op: str
    amount: int
    delta: int
    level: int  # the level after the change
    changed_at: datetime
    event_id: int | None  # None: an unkeyed change that changed nothing
    idempotency_key: str = ""
    duplicate: bool = False
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: Outcome
    changed: Changed | None = None
    level: int = 0  # the level as the refusal found it


@cache
def _tables() -> dict[str, str]:
    return {
        "versions": EntitlementVersion._meta.db_table,
        "levels": GaugeLevel._meta.db_table,
        "events": GaugeEvent._meta.db_table,
    }


def _greatest() -> str:
    return "GREATEST" if connection.vendor == "postgresql" else "MAX"


_FRESH = (
    "COALESCE((SELECT version FROM {versions} WHERE customer_id = %(customer)s), 0) = %(version)s"
)
_EXISTS = (
    "EXISTS (SELECT 1 FROM {levels} WHERE customer_id = %(customer)s AND primitive = %(primitive)s)"
)


def _upsert(op: str) -> str:
    """The level's conditional upsert for ``op``, answering (level, delta, changed_at), or
    no row when refused. ``room`` is ``limit - amount``: comparing the old level with it
    cannot overflow where ``level + amount`` could."""
    if op == ADD:
        new, source, gate = (
            "g.level + %(amount)s",
            f"{_FRESH} AND %(room)s >= 0",
            "g.level <= %(room)s",
        )
    elif op == SUBTRACT:
        new, source, gate = f"{_greatest()}(g.level - %(amount)s, 0)", "true", ""
    else:
        # A set below the level is a decrease, and one on a gauge never used starts it.
        increase = f"({_FRESH} AND %(amount)s <= %(limit)s)"
        new = "%(amount)s"
        source = f"{increase} OR %(amount)s = 0 OR {_EXISTS}"
        gate = f"%(amount)s <= g.level OR {increase}"
    return (
        (
            "INSERT INTO {levels} AS g (customer_id, primitive, level, last_change, changed_at) "
            "SELECT %(customer)s, %(primitive)s, %(initial)s, %(initial)s, %(now)s "
            f"WHERE {source} "
            "ON CONFLICT (customer_id, primitive) DO UPDATE "
            f"SET last_change = {new} - g.level, level = {new}, "
            f"changed_at = {_greatest()}(g.changed_at, excluded.changed_at) "
            + (f"WHERE {gate} " if gate else "")
            + "RETURNING level, last_change, changed_at"
        )
        .replace("{versions}", _tables()["versions"])
        .replace("{levels}", _tables()["levels"])
    )


def _event(source: str) -> str:
    """The change's event, from ``source`` (level, last_change, changed_at). A key known
    already inserts nothing (the caller rolls the change back and replays the first)."""
    return (
        f"INSERT INTO {_tables()['events']} "
        "(customer_id, primitive, op, amount, delta, level_after, occurred_at, idempotency_key) "
        "SELECT %(customer)s, %(primitive)s, %(op)s, %(amount)s, last_change, level, "
        f"changed_at, %(key)s FROM {source} "
        "ON CONFLICT (customer_id, idempotency_key) WHERE NOT (idempotency_key = '') "
        "DO NOTHING RETURNING id"
    )


def _params(change: Change, now: datetime) -> dict[str, Any]:
    limit = MAX_BIGINT if change.limit is None else change.limit
    return {
        "customer": customer_db_value(change.customer_id),
        "version": change.version,
        "primitive": change.primitive,
        "op": change.op,
        "amount": change.amount,
        "initial": 0 if change.op == SUBTRACT else change.amount,
        "limit": limit,
        "room": limit - change.amount,
        "now": connection.ops.adapt_datetimefield_value(now),
        "key": change.idempotency_key,
    }


@cache
def _one_statement(op: str, vendor: str) -> str:
    return (
        f"WITH lvl AS ({_upsert(op)}), "
        f"event AS ({_event('lvl WHERE last_change <> 0')}) "
        "SELECT (SELECT level FROM lvl), (SELECT last_change FROM lvl), "
        "(SELECT changed_at FROM lvl), (SELECT id FROM event), "
        f"(SELECT level FROM {_tables()['levels']} WHERE customer_id = %(customer)s "
        "AND primitive = %(primitive)s), " + _FRESH.replace("{versions}", _tables()["versions"])
    )


def change(request: Change) -> Attempt:
    """Make one change of a gauge, or say why not. Never raises for a refusal."""
    if request.idempotency_key:
        known = _replay(request)
        if known is not None:
            return Attempt(Outcome.DUPLICATE, known)
    if connection.vendor == "postgresql" and not request.idempotency_key:
        return _change_in_one_statement(request)
    return _change_in_transaction(request)


def _change_in_one_statement(request: Change) -> Attempt:
    with connection.cursor() as cursor:
        cursor.execute(
            _one_statement(request.op, connection.vendor), _params(request, timezone.now())
        )
        level, delta, changed_at, event_id, found, fresh = cursor.fetchone()
    if level is None:
        if not fresh:
            return Attempt(Outcome.STALE)
        return Attempt(Outcome.OVER_LIMIT, level=found or 0)
    return Attempt(Outcome.CHANGED, _changed(request, level, delta, changed_at, event_id))


class _Refused(Exception):
    """Rolls back a change's transaction."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


def _change_in_transaction(request: Change) -> Attempt:
    params = _params(request, timezone.now())
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_upsert(request.op), params)
            row = cursor.fetchone()
            if row is None:
                raise _Refused(Outcome.OVER_LIMIT)
            level, delta, changed_at = row
            source = (
                "(SELECT %(level)s AS level, %(delta)s AS last_change, "
                "%(changed_at)s AS changed_at) AS lvl WHERE last_change <> 0 OR %(key)s <> ''"
            )
            cursor.execute(
                _event(source), {**params, "level": level, "delta": delta, "changed_at": changed_at}
            )
            event = cursor.fetchone()
            if event is None and request.idempotency_key:
                raise _Refused(Outcome.DUPLICATE)
    except _Refused as refused:
        # A concurrent change with the same key may have been made meanwhile: answer it.
        known = _replay(request) if request.idempotency_key else None
        if known is not None:
            return Attempt(Outcome.DUPLICATE, known)
        if version_of(request.customer_id) != request.version:
            return Attempt(Outcome.STALE)
        assert refused.outcome is Outcome.OVER_LIMIT
        return Attempt(Outcome.OVER_LIMIT, level=level_of(request.customer_id, request.primitive))
    event_id = event[0] if event else None
    return Attempt(Outcome.CHANGED, _changed(request, level, delta, changed_at, event_id))


def _changed(
    request: Change, level: int, delta: int, changed_at: Any, event_id: int | None
) -> Changed:
    return Changed(
        customer_id=request.customer_id,
        primitive=request.primitive,
        op=request.op,
        amount=request.amount,
        delta=delta,
        level=level,
        changed_at=as_aware(changed_at),
        event_id=event_id,
        idempotency_key=request.idempotency_key,
        limit=request.limit,
    )


def _replay(request: Change) -> Changed | None:
    """The first change made with the request's key, or None; ``Conflict`` when the key
    was sent before with another change."""
    event = GaugeEvent.objects.filter(
        customer_id=request.customer_id, idempotency_key=request.idempotency_key
    ).first()
    if event is None:
        return None
    if (event.primitive, event.op, event.amount) != (request.primitive, request.op, request.amount):
        raise Conflict(
            f"{request.idempotency_key!r} was used before with a different change.",
            fields={"idempotency_key": ["Used before with a different change."]},
        )
    return Changed(
        customer_id=request.customer_id,
        primitive=event.primitive,
        op=event.op,
        amount=event.amount,
        delta=event.delta,
        level=event.level_after,
        changed_at=event.occurred_at,
        event_id=event.pk,
        idempotency_key=event.idempotency_key,
        duplicate=True,
    )


def level_of(customer_id: Any, primitive: str) -> int:
    level = (
        GaugeLevel.objects.filter(customer_id=customer_id, primitive=primitive)
        .values_list("level", flat=True)
        .first()
    )
    return level or 0


def levels_of(customer_id: Any) -> dict[str, int]:
    return dict(
        GaugeLevel.objects.filter(customer_id=customer_id)
        .order_by("primitive")
        .values_list("primitive", "level")
    )
