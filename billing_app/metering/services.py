"""The quota decision, and every way usage is recorded.

:func:`usage_reserve` is the one decision a metered call goes through, whatever its entry
point (``@metered`` with the middleware, the DRF mixin, ``POST .../billing/usage``). In
order: the Account Kit (403), the subscription's status (402), the kit's per-minute rate
(429) and the quota (429, or 402 where the project says so), the last two decided by the
database in the reservation itself, against the entitlement's version.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from ..conf import billing_settings, customer_model
from ..entitlements import Entitlement, entitlement_for, entitlement_is_current
from ..exceptions import (
    BillingError,
    CallRefused,
    InsufficientCredits,
    InvalidInput,
    PrimitiveNotAllowed,
    QuotaExceeded,
    RateLimited,
    SpendCapReached,
    SubscriptionInactive,
)
from ..periods import Window, minute_window
from ..validation import MAX_BIGINT
from . import alerts, ledger, levels
from .credits import balance_of, credits_auto_top_up, credits_refresh
from .ledger import Outcome, Reservation

FUTURE_TOLERANCE = timedelta(minutes=5)
ATTEMPTS = 3


def admit(entitlement: Entitlement, *, primitive: str, at: datetime) -> None:
    """The checks decided from the entitlement alone: kit, then status."""
    if not entitlement.allows(primitive):
        raise PrimitiveNotAllowed(
            f"{primitive} is not in this customer's Account Kit.", primitive=primitive
        )
    inactive = entitlement.inactive_reason(at)
    if inactive:
        raise SubscriptionInactive(inactive, primitive=primitive)


def usage_reserve(
    *,
    customer_id: Any,
    primitive: str,
    quantity: int = 1,
    at: datetime | None = None,
    idempotency_key: str = "",
    fingerprint: str = "",
    enforce: bool = True,
    live: bool = True,
    alert: bool = True,
) -> Reservation:
    """Admit and record ``quantity`` of ``primitive`` for the customer, in the quota window
    that ``at`` (now) falls in; raise the matching :class:`CallRefused` when it may not be.

    ``enforce=False`` records past the quota (reported usage that already happened: it
    becomes overage); ``live=False`` leaves the per-minute rate out (it is about calls as
    they are made). A known idempotency key answers its first reservation. ``alert=False``
    leaves the usage alerts to the caller, for usage that may yet be refunded: a metered
    call sends them (:func:`usage_alert`) once its view has succeeded.
    """
    now = timezone.now()
    at = at or now
    entitlement = entitlement_for(customer_id=customer_id)
    for _ in range(ATTEMPTS):
        if primitive in entitlement.gauges:
            raise not_a_counter(primitive)
        try:
            if enforce:
                admit(entitlement, primitive=primitive, at=now)
        except CallRefused:
            # Refused from a cached entitlement: only once the database agrees it is current.
            if entitlement_is_current(entitlement):
                raise
            entitlement = entitlement_for(customer_id=customer_id, fresh=True)
            continue
        window = entitlement.window(at)
        quota = entitlement.quota(primitive, window)
        cost = entitlement.credit_costs.get(primitive) if enforce else None
        if cost is not None and cost * quantity > MAX_BIGINT:
            # More than any balance can hold: refused as the balance would refuse it.
            balance = balance_of(customer_id=customer_id)
            raise InsufficientCredits(
                f"{quantity} {primitive} costs {cost * quantity} credits; {balance} are left.",
                primitive=primitive,
                balance=balance,
                cost=cost * quantity,
            )
        attempt = ledger.reserve(
            ledger.Request(
                customer_id=customer_id,
                version=entitlement.version,
                primitive=primitive,
                quantity=quantity,
                occurred_at=at,
                window=window,
                limit=quota.limit if enforce and quota and not quota.billed else None,
                quota=quota.limit if quota else None,
                rate=entitlement.rate(primitive) if enforce and live else None,
                credits=None if cost is None else cost * quantity,
                # Billed overage counts against the plan's spend cap; usage recorded past
                # the quota without enforcement counts too, but is never refused for it.
                overage_price=quota.price
                if quota and quota.billed and entitlement.spend_cap is not None
                else None,
                spend_cap=entitlement.spend_cap if enforce else None,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
            )
        )
        if attempt.outcome is Outcome.STALE:
            entitlement = entitlement_for(customer_id=customer_id, fresh=True)
            continue
        if attempt.outcome is Outcome.OVER_RATE:
            raise rate_refusal(primitive=primitive, rate=attempt.calls, now=now)
        if attempt.outcome is Outcome.CREDITS_STALE:
            credits_refresh(customer_id=customer_id, at=now)
            continue
        if attempt.outcome is Outcome.OVER_CREDITS:
            assert cost is not None
            raise InsufficientCredits(
                f"{quantity} {primitive} costs {cost * quantity} credits; "
                f"{attempt.balance} are left.",
                primitive=primitive,
                balance=attempt.balance,
                cost=cost * quantity,
            )
        if attempt.outcome is Outcome.OVER_SPEND:
            assert quota is not None and entitlement.spend_cap is not None
            raise spend_refusal(
                entitlement,
                primitive=primitive,
                used=attempt.used,
                limit=quota.limit,
                window=window,
                spent=attempt.spent or Decimal(0),
            )
        if attempt.outcome is Outcome.OVER_QUOTA:
            assert quota is not None
            raise quota_refusal(
                entitlement,
                primitive=primitive,
                used=attempt.used,
                limit=quota.limit,
                window=window,
            )
        reservation = attempt.reservation
        assert reservation is not None
        if attempt.outcome is Outcome.DUPLICATE:
            reservation = replace(reservation, limit=quota.limit if quota else None)
        elif alert:
            usage_alert(reservation=reservation)
        return reservation
    raise BillingError("The customer's entitlement kept changing; try again.")


def usage_alert(*, reservation: Reservation) -> None:
    """Send the usage and credit alerts of the thresholds that a kept reservation
    crossed, and buy the customer's auto top-up when its draw left the balance below the
    threshold."""
    if reservation.duplicate:
        return
    if reservation.limit is not None:
        alerts.note(
            customer_id=reservation.customer_id,
            primitive=reservation.primitive,
            window=reservation.window,
            before=reservation.used - reservation.quantity,
            after=reservation.used,
            limit=reservation.limit,
        )
    if reservation.balance is not None and reservation.credits:
        entitlement = entitlement_for(customer_id=reservation.customer_id)
        alerts.credits_note(
            customer_id=reservation.customer_id,
            before=reservation.balance + reservation.credits,
            after=reservation.balance,
            granted=entitlement.credits_granted,
            since=entitlement.credits_granted_since,
        )
        below = entitlement.auto_top_up_below
        if below is not None and reservation.balance < below:
            credits_auto_top_up(customer_id=reservation.customer_id)


def quota_refusal(
    entitlement: Entitlement, *, primitive: str, used: int, limit: int, window: Window
) -> QuotaExceeded:
    return QuotaExceeded(
        f"The {primitive} quota for this {entitlement.period} ({limit}) is used up.",
        primitive=primitive,
        limit=limit,
        used=used,
        resets_at=window.end,
        window_seconds=int((window.end - window.start).total_seconds()),
        wait=_seconds_until(window.end),
    )


def spend_refusal(
    entitlement: Entitlement,
    *,
    primitive: str,
    used: int,
    limit: int,
    window: Window,
    spent: Decimal,
) -> SpendCapReached:
    assert entitlement.spend_cap is not None
    cap = entitlement.spend_cap
    return SpendCapReached(
        f"The overage spend cap for this {entitlement.period} ({cap.normalize():f} in minor "
        f"units) leaves no room for more {primitive} past its quota ({limit}).",
        primitive=primitive,
        limit=limit,
        used=used,
        resets_at=window.end,
        window_seconds=int((window.end - window.start).total_seconds()),
        wait=_seconds_until(window.end),
        spent=spent,
        cap=cap,
    )


def rate_refusal(*, primitive: str, rate: int, now: datetime) -> RateLimited:
    minute = minute_window(now)
    return RateLimited(
        f"More than {rate} calls of {primitive} per minute.",
        primitive=primitive,
        limit=rate,
        used=rate,
        resets_at=minute.end,
        window_seconds=60,
        wait=_seconds_until(minute.end),
    )


def _seconds_until(instant: datetime) -> int:
    return max(1, math.ceil((instant - timezone.now()).total_seconds()))


def not_a_counter(primitive: str) -> InvalidInput:
    return InvalidInput(
        {"primitive": [f"{primitive} is a gauge on this plan: change its level, not usage."]}
    )


def usage_refund(*, reservation: Reservation) -> None:
    """Undo the reservation of a call that failed: it costs nothing."""
    ledger.refund(reservation)


def usage_record(
    *,
    customer_id: Any,
    primitive: str,
    quantity: int = 1,
    idempotency_key: str = "",
    timestamp: datetime | None = None,
    enforce: bool = True,
) -> Reservation:
    """Record usage reported through the API, in the window ``timestamp`` falls in.

    With ``enforce`` it is refused as a metered call would be (kit, status, quota; not
    the per-minute rate, which is about live calls); without, it is recorded even past the
    quota (overage). A known idempotency key answers the first result.
    """
    now = timezone.now()
    at = check_timestamp("timestamp", timestamp, now=now) if timestamp else now
    return usage_reserve(
        customer_id=customer_id,
        primitive=primitive,
        quantity=quantity,
        at=at,
        idempotency_key=idempotency_key,
        fingerprint=ledger.fingerprint(primitive, quantity, timestamp and timestamp.isoformat()),
        enforce=enforce,
        live=False,
    )


def _days(span: timedelta) -> str:
    """``35 days``; a span of part of a day as ``timedelta`` prints it."""
    return f"{span.days} days" if span == timedelta(days=span.days) else str(span)


def check_timestamp(field: str, at: datetime, *, now: datetime) -> datetime:
    if at < now - billing_settings.LATE_USAGE_WINDOW:
        raise InvalidInput(
            {field: [f"Usage older than {_days(billing_settings.LATE_USAGE_WINDOW)} is refused."]}
        )
    if at > now + FUTURE_TOLERANCE:
        raise InvalidInput({field: ["Usage may not be more than 5 minutes ahead."]})
    return at


@dataclass(frozen=True)
class Check:
    allowed: bool
    reason: str | None
    limit: int | None
    used: int
    remaining: int | None
    resets_at: datetime | None  # None: a gauge's level, which no window resets


def usage_check(*, customer_id: Any, primitive: str, quantity: int = 1) -> Check:
    """Would a call of ``quantity`` be admitted now (for a gauge: an increase of
    ``quantity``)? Consumes nothing."""
    now = timezone.now()
    entitlement = entitlement_for(customer_id=customer_id, fresh=True)
    gauge = entitlement.gauge(primitive)
    if gauge is not None:
        return _gauge_check(entitlement, customer_id, primitive, quantity, gauge, now)
    window = entitlement.window(now)
    used = ledger.used_in(customer_id=customer_id, primitive=primitive, window=window)
    quota = entitlement.quota(primitive, window)
    limit = quota.limit if quota else None
    remaining = None if limit is None else max(0, limit - used)
    reason = None
    try:
        admit(entitlement, primitive=primitive, at=now)
    except CallRefused as refused:
        reason = refused.code
    rate = entitlement.rate(primitive)
    if reason is None and rate is not None and _calls_this_minute(customer_id, primitive) >= rate:
        reason = RateLimited.code
    if reason is None and quota and not quota.billed and quantity > (remaining or 0):
        reason = QuotaExceeded.code
    if reason is None and quota and quota.price is not None and entitlement.spend_cap is not None:
        units = min(quantity, max(0, used + quantity - quota.limit))
        spent = ledger.spent_in(customer_id=customer_id, window=window)
        if units and spent + units * quota.price > entitlement.spend_cap:
            reason = SpendCapReached.code
    return Check(reason is None, reason, limit, used, remaining, window.end)


def _gauge_check(
    entitlement: Any, customer_id: Any, primitive: str, quantity: int, gauge: Any, now: Any
) -> Check:
    level = levels.level_of(customer_id, primitive)
    remaining = max(0, gauge.limit - level)
    reason = None
    try:
        admit(entitlement, primitive=primitive, at=now)
    except CallRefused as refused:
        reason = refused.code
    if reason is None and not gauge.billed and quantity > remaining:
        reason = QuotaExceeded.code
    return Check(reason is None, reason, gauge.limit, level, remaining, None)


def _calls_this_minute(customer_id: Any, primitive: str) -> int:
    from ..models import RateCounter

    row = RateCounter.objects.filter(customer_id=customer_id, primitive=primitive).first()
    if row is None or row.minute != minute_window(timezone.now()).start:
        return 0
    return row.calls


# --- batches ---------------------------------------------------------------------------

BATCH_LIMIT = 1000
_PRIMITIVE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")


def usage_ingest(*, events: list[Any]) -> list[dict[str, Any]]:
    """Record a batch of reported usage (``POST /v1/usage/events``): one result per event,
    in order. A bad event fails alone with its field errors (``invalid``); the good ones
    land together. Validated by hand rather than with a serializer per event: this is the
    bulk path, and what events of a batch share (a customer, a timestamp) is parsed once.
    Reported usage is recorded past the quota (overage), but the kit and the
    subscription's status apply as they do to a single report."""
    parser = _EventParser(timezone.now())
    parsed = [parser.parse(event) for event in events]
    ids = {fields["customer_id"] for fields, errors in parsed if not errors}
    entitlements = _entitlements_of(ids)
    items: list[ledger.Item | dict[str, list[str]]] = []
    for fields, errors in parsed:
        if errors:
            items.append(errors)
            continue
        entitlement = entitlements.get(fields["customer_id"])
        if entitlement is None:
            items.append({"userId": [f"No customer with id {fields['raw_id']!r}."]})
            continue
        if fields["primitive"] in entitlement.gauges:
            items.append(not_a_counter(fields["primitive"]).fields)
            continue
        try:
            admit(entitlement, primitive=fields["primitive"], at=parser.now)
        except CallRefused as refused:
            items.append({"primitive": [f"{refused.code}: {refused.message}"]})
            continue
        items.append(
            ledger.Item(
                customer_id=fields["customer_id"],
                primitive=fields["primitive"],
                quantity=fields["quantity"],
                occurred_at=fields["at"],
                window=entitlement.window(fields["at"]),
                idempotency_key=fields["key"],
                fingerprint=ledger.fingerprint(
                    fields["primitive"], fields["quantity"], fields["timestamp"]
                ),
            )
        )
    good = [item for item in items if isinstance(item, ledger.Item)]
    outcomes, after = ledger.ingest(good, _capped_overage(good, entitlements))
    added: dict[tuple[Any, str, Window], int] = {}
    for item, (status, _) in zip(good, outcomes, strict=True):
        if status == "created":
            key = (item.customer_id, item.primitive, item.window)
            added[key] = added.get(key, 0) + item.quantity
    for (customer_id, primitive, window), used in after.items():
        quota = entitlements[customer_id].quota(primitive, window)
        if quota is not None:
            alerts.note(
                customer_id=customer_id,
                primitive=primitive,
                window=window,
                before=used - added.get((customer_id, primitive, window), 0),
                after=used,
                limit=quota.limit,
            )
    results = []
    answers = iter(outcomes)
    for index, parsed_item in enumerate(items):
        if isinstance(parsed_item, dict):
            results.append({"index": index, "status": "invalid", "errors": parsed_item})
            continue
        status, event_id = next(answers)
        result: dict[str, Any] = {"index": index, "status": status, "id": event_id}
        if status == "conflict":
            result["errors"] = {"idempotencyKey": ["Used before with a different event."]}
        results.append(result)
    return results


def _capped_overage(
    items: list[ledger.Item], entitlements: dict[Any, Entitlement]
) -> dict[tuple[Any, str, Window], tuple[int, Decimal]]:
    """The batch's counters whose overage counts against their plan's spend cap: (quota,
    price) per (customer, primitive, window)."""
    capped = {}
    for item in items:
        entitlement = entitlements[item.customer_id]
        if entitlement.spend_cap is None:
            continue
        quota = entitlement.quota(item.primitive, item.window)
        if quota is not None and quota.billed and quota.price is not None:
            capped[(item.customer_id, item.primitive, item.window)] = (quota.limit, quota.price)
    return capped


def _entitlements_of(customer_ids: set[Any]) -> dict[Any, Entitlement]:
    """One entitlement per customer of the batch that exists, cached ones checked against
    the database's versions in one query."""
    from ..models import EntitlementVersion

    Customer = customer_model()
    existing = set(
        Customer._default_manager.filter(pk__in=customer_ids).values_list("pk", flat=True)
    )
    versions = dict(
        EntitlementVersion.objects.filter(customer_id__in=existing).values_list(
            "customer_id", "version"
        )
    )
    found = {}
    for customer_id in existing:
        entitlement = entitlement_for(customer_id=customer_id)
        if entitlement.version != versions.get(customer_id, 0):
            entitlement = entitlement_for(customer_id=customer_id, fresh=True)
        found[customer_id] = entitlement
    return found


class _EventParser:
    """Parses a batch's events; what events share is parsed once (ids, timestamps)."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.integer_keys = customer_key_is_integer()
        self.pk = customer_model()._meta.pk
        self.ids: dict[Any, Any] = {}
        self.times: dict[str, tuple[datetime | None, list[str] | None]] = {}

    def parse(self, event: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
        if not isinstance(event, dict):
            return {}, {"event": ["An event is a JSON object."]}
        errors: dict[str, list[str]] = {}
        raw_id, primitive = event.get("userId"), event.get("primitive")
        quantity, key = event.get("quantity", 1), event.get("idempotencyKey") or ""
        customer_id = self._customer_id(raw_id)
        if customer_id is None:
            errors["userId"] = [_id_error(raw_id)]
        if not isinstance(primitive, str) or not _PRIMITIVE.match(primitive):
            errors["primitive"] = ["A primitive is a slug such as 'seo' or 'email.send'."]
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not 0 < quantity < 2**63:
            errors["quantity"] = ["A quantity is a positive integer below 2^63."]
        if not isinstance(key, str) or len(key) > 255 or "\x00" in key:
            errors["idempotencyKey"] = [
                "An idempotency key is a string of at most 255 characters, without NUL."
            ]
        raw_time = event.get("timestamp")
        at = self.now
        if raw_time is not None:
            parsed, problem = self._time(raw_time)
            if problem:
                errors["timestamp"] = problem
            else:
                at = parsed  # type: ignore[assignment]
        fields = {
            "customer_id": customer_id,
            "raw_id": raw_id,
            "primitive": primitive,
            "quantity": quantity,
            "key": key,
            "at": at,
            "timestamp": raw_time,
        }
        return fields, errors

    def _customer_id(self, value: Any) -> Any:
        if self.integer_keys:
            return value if type(value) is int and -(2**63) <= value < 2**63 else None
        if not isinstance(value, str) or len(value) > 255:
            return None
        if value not in self.ids:
            try:
                self.ids[value] = self.pk.to_python(value)
            except Exception:
                self.ids[value] = None
        return self.ids[value]

    def _time(self, raw: Any) -> tuple[datetime | None, list[str] | None]:
        if not isinstance(raw, str):
            return None, ["An ISO 8601 date-time with a time zone."]
        if raw not in self.times:
            self.times[raw] = self._parse_time(raw)
        return self.times[raw]

    def _parse_time(self, raw: str) -> tuple[datetime | None, list[str] | None]:
        why = "An ISO 8601 date-time with a time zone."
        try:
            parsed = parse_datetime(raw)
        except ValueError as error:  # the shape of a date-time, but no such instant: say why
            parsed, why = None, f"Not a date-time: {str(error).rstrip('.')}."
        if parsed is None or parsed.tzinfo is None:
            return None, [why]
        try:
            return check_timestamp("timestamp", parsed, now=self.now), None
        except InvalidInput as error:
            return None, error.fields["timestamp"]


_INTEGER_KEYS = {
    "AutoField",
    "BigAutoField",
    "SmallAutoField",
    "IntegerField",
    "BigIntegerField",
    "SmallIntegerField",
    "PositiveIntegerField",
    "PositiveBigIntegerField",
    "PositiveSmallIntegerField",
}


def customer_key_is_integer() -> bool:
    return customer_model()._meta.pk.get_internal_type() in _INTEGER_KEYS


def parse_customer_id(value: Any) -> Any:
    """A customer key from JSON, or None: an integer key takes an integer (not a bool, a
    float or a string), any other key type a string it can parse."""
    if customer_key_is_integer():
        return value if type(value) is int and -(2**63) <= value < 2**63 else None
    if not isinstance(value, str) or len(value) > 255:
        return None
    try:
        return customer_model()._meta.pk.to_python(value)
    except Exception:
        return None


def _id_error(value: Any) -> str:
    if customer_key_is_integer() and isinstance(value, str) and value.strip().isdigit():
        return f"A customer id is a JSON number here: {value!r} is a string."
    kind = "an integer" if customer_key_is_integer() else "a string"
    return f"{value!r} is not a customer id ({kind})."


Quantity = int | Callable[[Any], int]


# --- gauges ----------------------------------------------------------------------------

GAUGE_OPS = (levels.ADD, levels.SUBTRACT, levels.SET)


def gauge_change(
    *, customer_id: Any, primitive: str, op: str, amount: int, idempotency_key: str = ""
) -> levels.Changed:
    """Change the customer's gauge ``primitive``: ``add`` or ``subtract`` ``amount``, or
    ``set`` the level to it. A change that raises the level is refused as a metered call
    is (the kit: 403, the subscription's status: 402, the plan's limit on the level:
    ``QuotaExceeded``), decided by the database against the entitlement's version; one
    that lowers it always succeeds and never goes below zero. A known idempotency key
    answers its first change; with another change, ``Conflict``."""
    _check_gauge_input(primitive=primitive, op=op, amount=amount, key=idempotency_key)
    now = timezone.now()
    entitlement = entitlement_for(customer_id=customer_id)
    for _ in range(ATTEMPTS):
        if primitive in entitlement.quotas:
            raise InvalidInput(
                {"primitive": [f"{primitive} is counted per window on this plan, not a gauge."]}
            )
        # A set may raise the level or lower it: refused from raising it, it may still
        # lower it (limit -1 admits no increase).
        refusal: CallRefused | None = None
        if op != levels.SUBTRACT:
            try:
                admit(entitlement, primitive=primitive, at=now)
            except CallRefused as refused:
                if not entitlement_is_current(entitlement):
                    entitlement = entitlement_for(customer_id=customer_id, fresh=True)
                    continue
                if op == levels.ADD:
                    raise
                refusal = refused
        quota = entitlement.gauge(primitive)
        limit = quota.limit if quota and not quota.billed else None
        attempt = levels.change(
            levels.Change(
                customer_id=customer_id,
                version=entitlement.version,
                primitive=primitive,
                op=op,
                amount=amount,
                limit=-1 if refusal else limit,
                idempotency_key=idempotency_key,
            )
        )
        if attempt.outcome is levels.Outcome.STALE:
            entitlement = entitlement_for(customer_id=customer_id, fresh=True)
            continue
        if attempt.outcome is levels.Outcome.OVER_LIMIT:
            if refusal is not None:
                raise refusal
            assert quota is not None
            raise QuotaExceeded(
                f"The {primitive} limit ({quota.limit}) leaves no room for this change "
                f"(the level is {attempt.level}).",
                primitive=primitive,
                limit=quota.limit,
                used=attempt.level,
            )
        assert attempt.changed is not None
        return replace(attempt.changed, limit=quota.limit if quota else None)
    raise BillingError("The customer's entitlement kept changing; try again.")


def _check_gauge_input(*, primitive: Any, op: Any, amount: Any, key: Any) -> None:
    errors: dict[str, list[str]] = {}
    if not isinstance(primitive, str) or not _PRIMITIVE.match(primitive):
        errors["primitive"] = ["A primitive is a slug such as 'storage' or 'files.bytes'."]
    if op not in GAUGE_OPS:
        errors["op"] = [f"One of {', '.join(GAUGE_OPS)}, not {op!r}."]
    smallest = 0 if op == levels.SET else 1
    if isinstance(amount, bool) or not isinstance(amount, int) or not smallest <= amount < 2**63:
        errors["amount"] = [f"An integer from {smallest} to 2^63 - 1, not {amount!r}."]
    if not isinstance(key, str) or len(key) > 255 or "\x00" in key:
        errors["idempotency_key"] = ["A string of at most 255 characters, without NUL."]
    if errors:
        raise InvalidInput(errors)
