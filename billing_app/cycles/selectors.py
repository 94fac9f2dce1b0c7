"""What a billing period's usage comes to, from the usage events (the ledger).

A period need not line up with the quota windows (a plan change in the middle of a window,
a Stripe period that is not a quota period), so usage is summed from the events, and
overage is counted per quota window: a window's usage before the period began is counted
against the quota first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from ..conf import billing_settings
from ..models import (
    AdvanceCharge,
    BillingPeriod,
    GaugeEvent,
    Plan,
    QuotaGrant,
    Subscription,
    UsageEvent,
    UsageRecord,
)
from ..periods import cycle_window
from .pricing import (
    MINIMUM,
    MONEY,
    PLACES,
    Charges,
    Line,
    advance_lines,
    late_line,
    period_charges,
    projected,
    total_of,
)

Usage = dict[str, dict[str, Any]]


def quotas_of(period: BillingPeriod, seats: int, *, kind: str = "counter") -> dict[str, int]:
    """The quotas (or, with ``kind="gauge"``, the limits on gauges' levels) a period is
    measured against: its plan's, per seat where they are."""
    return {
        quota.primitive: quota.limit * seats if quota.per_seat else quota.limit
        for quota in period.plan.quotas.all()
        if quota.kind == kind
    }


def usage_between(
    *,
    customer_id: Any,
    start: datetime,
    end: datetime,
    quotas: Mapping[str, int | None],
    grants: Mapping[tuple[str, datetime], int] | None = None,
) -> Usage:
    """Per primitive, the used quantity, quota and overage of ``[start, end)``. A quota
    window with a grant (a one-off increase) counts overage past the raised quota."""
    grants = grants or {}
    events = UsageEvent.objects.filter(customer_id=customer_id)
    within = events.filter(occurred_at__gte=start, occurred_at__lt=end)
    usage: Usage = {
        primitive: {"used": 0, "quota": limit, "overage": 0} for primitive, limit in quotas.items()
    }
    rows = within.values("primitive", "window_start").annotate(used=Sum("quantity")).order_by()
    for row in rows:
        entry = usage.setdefault(row["primitive"], {"used": 0, "quota": None, "overage": 0})
        entry["used"] += row["used"]
        quota = entry["quota"]
        if quota is not None:
            granted = grants.get((row["primitive"], row["window_start"]), 0)
            if granted:
                entry["granted"] = entry.get("granted", 0) + granted
            quota += granted
            before = (
                events.filter(
                    primitive=row["primitive"],
                    window_start=row["window_start"],
                    occurred_at__lt=start,
                ).aggregate(used=Sum("quantity"))["used"]
                or 0
            )
            entry["overage"] += max(0, before + row["used"] - quota) - max(0, before - quota)
    return usage


def gauges_between(
    *, customer_id: Any, start: datetime, end: datetime, limits: Mapping[str, int]
) -> Usage:
    """Per gauge, its level over ``[start, end)``: at the end, at its peak, and on average
    over time (the level integrated over the span, in unit-hours, divided by its length),
    and its overage, the average of the level's excess over the limit. The average of a
    monthly period is the unit-months a price per GB-month bills. Rounded half up to
    whole units; ``unitHours`` is a decimal string."""
    events = GaugeEvent.objects.filter(customer_id=customer_id).order_by()
    used = events.filter(occurred_at__lt=end).values_list("primitive", flat=True).distinct()
    usage: Usage = {}
    for primitive in sorted({*limits, *used}):
        mine = events.filter(primitive=primitive)
        level = (
            mine.filter(occurred_at__lt=start)
            .order_by("-occurred_at", "-id")
            .values_list("level_after", flat=True)
            .first()
        ) or 0
        changes = (
            mine.filter(occurred_at__gte=start, occurred_at__lt=end)
            .order_by("occurred_at", "id")
            .values_list("occurred_at", "level_after")
        )
        entry = level_over_time(start, end, level, changes.iterator(), limits.get(primitive))
        if entry["peak"] or primitive in limits:
            usage[primitive] = entry
    return usage


def level_over_time(
    start: datetime,
    end: datetime,
    level: int,
    changes: Iterable[tuple[datetime, int]],
    limit: int | None,
) -> dict[str, Any]:
    """The usage entry of a gauge at ``level`` at ``start`` that then takes the levels of
    ``changes`` (instant, level after), in order. Exact: integrated in unit-microseconds."""
    total = excess = 0
    peak, since = level, start

    def hold(until: datetime) -> None:
        nonlocal total, excess
        span = (until - since) // timedelta(microseconds=1)
        total += level * span
        if limit is not None:
            excess += max(0, level - limit) * span

    for at, after in changes:
        hold(at)
        level, since = after, at
        peak = max(peak, level)
    hold(end)
    length = max(1, (end - start) // timedelta(microseconds=1))
    with localcontext() as context:
        context.prec = 80
        unit_hours = (Decimal(total) / MICROSECONDS_PER_HOUR).quantize(Decimal("0.000001"))
    return {
        "kind": "gauge",
        "level": level,
        "peak": peak,
        "average": _rounded(total, length),
        "unitHours": f"{unit_hours.normalize():f}",
        "quota": limit,
        "overage": _rounded(excess, length) if limit is not None else 0,
    }


MICROSECONDS_PER_HOUR = Decimal(3_600_000_000)


def _rounded(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half up, exactly."""
    return (2 * numerator + denominator) // (2 * denominator)


def period_usage(period: BillingPeriod, *, until: datetime | None = None) -> Usage:
    seats = Subscription.objects.filter(pk=period.subscription_id).values_list("seats", flat=True)
    count = seats.first() or 1
    end = period.end if until is None else min(until, period.end)
    usage = usage_between(
        customer_id=period.customer_id,
        start=period.start,
        end=end,
        quotas=quotas_of(period, count),
        grants=grants_of(period.customer_id),
    )
    usage.update(
        gauges_between(
            customer_id=period.customer_id,
            start=period.start,
            end=end,
            limits=quotas_of(period, count, kind="gauge"),
        )
    )
    return usage


def grants_of(customer_id: Any) -> dict[tuple[str, datetime], int]:
    grants: dict[tuple[str, datetime], int] = {}
    rows = QuotaGrant.objects.filter(customer_id=customer_id).values_list(
        "primitive", "window_start", "amount"
    )
    for primitive, start, amount in rows:
        grants[(primitive, start)] = grants.get((primitive, start), 0) + amount
    return grants


def late_adjustments(*, customer_id: Any, before: datetime) -> list[dict[str, Any]]:
    """Usage that reached already recorded periods ending by ``before`` after they were
    recorded (reported late), or left them (refunded after the close): per period and
    primitive, what their events sum to now minus what was billed for them so far (their
    record and earlier adjustments). Posted to the next record, and billed with it, so a
    recorded record never changes and every event is billed exactly once."""
    previous = (
        UsageRecord.objects.filter(customer_id=customer_id, period__end__lte=before)
        .order_by("-closed_at")
        .first()
    )
    if previous is None:
        return []
    # Late usage is refused past LATE_USAGE_WINDOW, so nothing older can have changed since
    # the previous close (a day more for events in flight at that moment).
    since = previous.closed_at - billing_settings.LATE_USAGE_WINDOW - timedelta(days=1)
    records = list(
        UsageRecord.objects.filter(
            customer_id=customer_id, period__end__gt=since, period__end__lte=before
        ).select_related("period")
    )
    billed: dict[tuple[int, str], dict[str, int]] = {}
    # Gauges change now or never: no change reaches a closed period late.
    for record in records:
        for primitive, entry in _counters(record.usage).items():
            billed[(record.pk, primitive)] = {"used": entry["used"], "overage": entry["overage"]}
    later = UsageRecord.objects.filter(customer_id=customer_id, closed_at__gte=since)
    for record in later:
        for adjustment in record.adjustments:
            key = (adjustment["periodId"], adjustment["primitive"])
            if key in billed:
                billed[key]["used"] += adjustment["used"]
                billed[key]["overage"] += adjustment["overage"]
    adjustments = []
    grants = grants_of(customer_id)
    for record in sorted(records, key=lambda r: r.period.start):
        quotas = {p: entry["quota"] for p, entry in _counters(record.usage).items()}
        now = usage_between(
            customer_id=customer_id,
            start=record.period.start,
            end=record.period.end,
            quotas=quotas,
            grants=grants,
        )
        for primitive, entry in sorted(now.items()):
            was = billed.get((record.pk, primitive), {"used": 0, "overage": 0})
            used, overage = entry["used"] - was["used"], entry["overage"] - was["overage"]
            if used or overage:
                adjustments.append(
                    {
                        "periodId": record.pk,
                        "primitive": primitive,
                        "used": used,
                        "overage": overage,
                    }
                )
    return adjustments


def _counters(usage: Usage) -> Usage:
    return {p: entry for p, entry in usage.items() if entry.get("kind") != "gauge"}


@dataclass(frozen=True)
class CurrentRecord:
    """The open period's record as it stands: not stored, read from the events."""

    period: BillingPeriod
    usage: Usage
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    status: str = UsageRecord.Status.CURRENT
    closed_at: None = None

    @property
    def pk(self) -> int:
        return self.period.pk

    @property
    def plan(self) -> Any:
        return self.period.plan


def record_current(*, customer: Any, at: datetime | None = None) -> CurrentRecord | None:
    """The record of the period open at ``at`` (now), or None when none is open."""
    at = at or timezone.now()
    period = (
        BillingPeriod.objects.select_related("plan")
        .prefetch_related("plan__quotas")
        .filter(customer=customer, start__lte=at, end__gt=at, record__isnull=True)
        .first()
    )
    if period is None:
        return None
    return CurrentRecord(
        period=period,
        usage=period_usage(period, until=at),
        adjustments=late_adjustments(customer_id=period.customer_id, before=period.start),
    )


def records_of(*, customer: Any, status: str | None = None) -> Any:
    records = UsageRecord.objects.filter(customer=customer).select_related("plan", "period")
    return records.filter(status=status) if status else records


# --- charges: what periods cost under their plans' prices -----------------------------


def _subscription_of(period: BillingPeriod) -> Subscription:
    return Subscription.objects.get(pk=period.subscription_id)


def is_trial(period: BillingPeriod, subscription: Subscription | None = None) -> bool:
    """A period that starts inside the subscription's trial is not charged."""
    return (subscription or _subscription_of(period)).in_trial(period.start)


def minimum_of(period: BillingPeriod, subscription: Subscription | None = None) -> Decimal | None:
    """The plan's minimum commitment for the period, in proportion to the share of a full
    billing cycle it covers (a plan change splits a cycle into two shorter periods)."""
    plan = period.plan
    if plan.minimum_commitment is None:
        return None
    subscription = subscription or _subscription_of(period)
    cycle = cycle_window(plan.billing_cadence, subscription.billing_cycle_anchor, period.start)
    step = timedelta(microseconds=1)
    covered, full = (period.end - period.start) // step, (cycle.end - cycle.start) // step
    if covered >= full:
        return plan.minimum_commitment
    with localcontext(MONEY):
        return (plan.minimum_commitment * covered / full).quantize(PLACES)


def advance_of(period: BillingPeriod, subscription: Subscription | None = None) -> list[Line]:
    """What the period is charged when it opens: as charged, once it was, else as it will
    be at the plan's prices now."""
    charged = AdvanceCharge.objects.filter(period=period).first()
    if charged is not None:
        return [Line.from_json(line) for line in charged.lines]
    if is_trial(period, subscription):
        return []
    return [line for price in period.plan.prices.all() for line in advance_lines(price)]


def own_charges(
    period: BillingPeriod,
    used: Mapping[str, int],
    *,
    advance: list[Line] | None = None,
    subscription: Subscription | None = None,
) -> Charges:
    """The charges of a period's own usage (``used``: primitive -> units): in advance,
    in arrears, and the minimum commitment's top-up. None in a trial."""
    subscription = subscription or _subscription_of(period)
    if is_trial(period, subscription):
        return Charges()
    return period_charges(
        period.plan.prices.all(),
        used,
        advance=advance_of(period, subscription) if advance is None else advance,
        minimum=minimum_of(period, subscription),
    )


def late_charges(
    *, customer_id: Any, adjustments: list[dict[str, Any]], exclude_record: Any = None
) -> list[tuple[BillingPeriod, Line]]:
    """The adjustments' charges, each at the prices of the period it belongs to: what its
    usage costs now minus what was charged for it (its record and earlier adjustments)."""
    wanted = {adjustment["periodId"] for adjustment in adjustments if adjustment["used"]}
    if not wanted:
        return []
    records = {
        record.pk: record
        for record in UsageRecord.objects.filter(pk__in=wanted).select_related(
            "period__plan", "period__subscription"
        )
    }
    since = min(record.closed_at for record in records.values())
    earlier = UsageRecord.objects.filter(customer_id=customer_id, closed_at__gte=since)
    if exclude_record is not None:
        earlier = earlier.exclude(pk=exclude_record)
    billed: dict[tuple[int, str], int] = {}
    for later in earlier.only("adjustments"):
        for adjustment in later.adjustments:
            key = (adjustment["periodId"], adjustment["primitive"])
            billed[key] = billed.get(key, 0) + adjustment["used"]
    charges = []
    for adjustment in adjustments:
        record = records.get(adjustment["periodId"])
        if record is None or not adjustment["used"]:
            continue
        period, primitive = record.period, adjustment["primitive"]
        price = next((p for p in period.plan.prices.all() if p.primitive == primitive), None)
        if price is None or is_trial(period, period.subscription):
            continue
        was = record.usage.get(primitive, {}).get("used", 0)
        line = late_line(
            price,
            billed=was + billed.get((period.pk, primitive), 0),
            late=adjustment["used"],
            label=f"{period.start:%Y-%m-%d} to {period.end:%Y-%m-%d}",
            line=f"late-{period.pk}",
        )
        if line is not None:
            charges.append((period, line))
    return charges


def used_of(usage: Usage) -> dict[str, int]:
    return {primitive: entry.get("used", 0) for primitive, entry in usage.items()}


@dataclass(frozen=True)
class Upcoming:
    """The open period's charges so far and as projected to its end."""

    period: BillingPeriod
    at: datetime
    minimum: Decimal | None
    so_far: list[Line]
    projection: list[Line]
    late: list[tuple[BillingPeriod, Line]]

    @property
    def plan(self) -> Plan:
        return self.period.plan

    @property
    def so_far_total(self) -> Decimal:
        return total_of(self.so_far)

    @property
    def projection_total(self) -> Decimal:
        return total_of(self.projection)


def upcoming(*, customer: Any, at: datetime | None = None) -> Upcoming | None:
    """What the open period costs so far, and what it will at this pace: each primitive's
    usage so far extrapolated linearly to the period's end (``used x period length /
    time elapsed``). Late usage of earlier periods, billed with this one, is in both as
    it stands; the minimum commitment's top-up only in the projection (it is decided at
    the end). Reads only."""
    at = at or timezone.now()
    current = record_current(customer=customer, at=at)
    if current is None:
        return None
    period = current.period
    subscription = _subscription_of(period)
    used = used_of(current.usage)
    advance = [] if is_trial(period, subscription) else advance_of(period, subscription)
    so_far = own_charges(period, used, advance=advance, subscription=subscription)
    elapsed, length = at - period.start, period.end - period.start
    ahead = {p: projected(n, elapsed=elapsed, length=length) for p, n in used.items()}
    projection = own_charges(period, ahead, advance=advance, subscription=subscription)
    late = late_charges(customer_id=period.customer_id, adjustments=current.adjustments)
    late_lines = [line for _, line in late]
    return Upcoming(
        period=period,
        at=at,
        minimum=None if is_trial(period, subscription) else minimum_of(period, subscription),
        so_far=[line for line in so_far.lines if line.line != MINIMUM] + late_lines,
        projection=projection.lines + late_lines,
        late=late,
    )
