"""Billing cycles: each tenant's usage records, opened and closed as cycles pass.

A cycle follows the subscription's Stripe period when it has one, else the plan's
``billing_cadence`` from the subscription's start. A tenant has at most one ``current``
record (the database says so). Closing writes the cycle's usage, quota and overage per
primitive, computed from the usage events (the ledger), and the record never changes again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from . import outbox
from .models import Subscription, SubscriptionStatus, UsageEvent, UsageRecord
from .periods import Window, cycle_window

ENDED = {SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED}
Status = UsageRecord.Status


def cycle_of(subscription: Subscription, at: datetime) -> Window:
    """The billing cycle of ``subscription`` that contains ``at``."""
    start, end = subscription.current_period_start, subscription.current_period_end
    if start and end and start <= at < end:
        return Window(start, end)
    # Past the Stripe period (its renewal not heard of yet), cycles follow on from its end.
    anchor = (end if end and at >= end else start) or subscription.created_at
    return cycle_window(subscription.plan.billing_cadence, anchor, at)


def follow(*, user: Any, at: datetime | None = None) -> UsageRecord | None:
    """Bring the tenant's records in step with its subscription: close the cycles that have
    ended (Stripe moved the period on, or no scheduler ran), then answer the open record of
    the cycle containing ``at``. An ended subscription finalizes its open record."""
    at = at or timezone.now()
    with transaction.atomic():
        subscription = Subscription.objects.select_related("plan").filter(user=user).first()
        record = (
            UsageRecord.objects.select_for_update().filter(user=user, status=Status.CURRENT).first()
        )
        if subscription is None:
            return None
        if subscription.status in ENDED:
            if record is not None:
                # The cycle open at the cancellation ends there (and no later than it would).
                end = max(at, record.cycle_start + timedelta(microseconds=1))
                _close(record, Status.FINAL, end=min(end, record.cycle_end))
            return None
        return _catch_up(subscription, record, at)[0]


def close_cycles(*, at: datetime | None = None) -> list[UsageRecord]:
    """Close every record whose cycle has ended, and open its successor; open a record for
    every live subscription without one. Safe to run often, and from two schedulers at
    once: a record being closed by one is skipped by the other."""
    at = at or timezone.now()
    closed: list[UsageRecord] = []
    due = UsageRecord.objects.filter(status=Status.CURRENT, cycle_end__lte=at)
    for user_id in due.values_list("user_id", flat=True):
        with transaction.atomic():
            record = (
                UsageRecord.objects.select_for_update(skip_locked=True)
                .filter(user_id=user_id, status=Status.CURRENT, cycle_end__lte=at)
                .first()
            )
            if record is None:
                continue  # another scheduler has it, or has closed it
            subscription = (
                Subscription.objects.select_related("plan").filter(user_id=user_id).first()
            )
            if subscription is None or subscription.status in ENDED:
                closed.append(_close(record, Status.RECORDED))
                continue
            closed.extend(_catch_up(subscription, record, at)[1])
    unrecorded = Subscription.objects.exclude(status__in=ENDED).exclude(
        user__billing_records__status=Status.CURRENT
    )
    for subscription in unrecorded.select_related("plan"):
        with transaction.atomic():
            _catch_up(subscription, None, at)
    return closed


def _catch_up(
    subscription: Subscription, record: UsageRecord | None, at: datetime
) -> tuple[UsageRecord, list[UsageRecord]]:
    """Close ``record`` and its successors until the open one contains ``at``. Answers the
    open record and the records it closed."""
    closed: list[UsageRecord] = []
    if record is not None and record.cycle_start > at:
        return record, closed
    while record is not None and record.cycle_end <= at:
        closed.append(_close(record, Status.RECORDED))
        record = _open(subscription, record.cycle_end, start=record.cycle_end)
    if record is None:
        record = _open(subscription, at)
    elif record.plan_id != subscription.plan_id and record.cycle_start >= at:
        record.plan = subscription.plan  # changed the moment it opened: nothing to record
        record.save(update_fields=["plan", "updated_at"])
    elif record.plan_id != subscription.plan_id:
        # A plan change: the old plan's part of the cycle is recorded, the rest opens anew.
        closed.append(_close(record, Status.RECORDED, end=at))
        record = _open(subscription, at, start=at)
    elif (
        subscription.current_period_start
        and record.cycle_start < subscription.current_period_start <= at
    ):
        # Stripe moved the period on before the old cycle's end: close it there.
        closed.append(_close(record, Status.RECORDED, end=subscription.current_period_start))
        record = _open(subscription, at)
    return record, closed


def as_json(record: UsageRecord) -> dict[str, Any]:
    return {
        "id": record.pk,
        "userId": record.user_id,
        "plan": record.plan.key,
        "status": record.status,
        "cycleStart": record.cycle_start.isoformat(),
        "cycleEnd": record.cycle_end.isoformat(),
        "usage": record.usage,
    }


def _open(subscription: Subscription, at: datetime, start: datetime | None = None) -> UsageRecord:
    """The open record of the cycle containing ``at``, starting no earlier than ``start``
    (where the previous record ended)."""
    cycle = cycle_of(subscription, at)
    record, _ = UsageRecord.objects.get_or_create(
        user_id=subscription.user_id,
        cycle_start=max(cycle.start, start) if start else cycle.start,
        defaults={"plan": subscription.plan, "cycle_end": cycle.end},
    )
    return record


def current_usage(record: UsageRecord, at: datetime | None = None) -> dict[str, dict[str, Any]]:
    """What a record's usage would be if it closed now: for reading an open record."""
    return usage_between(record, min(at or timezone.now(), record.cycle_end))


def usage_between(record: UsageRecord, end: datetime) -> dict[str, dict[str, Any]]:
    """Per primitive, the used quantity, quota and overage of ``record``'s cycle up to
    ``end``, from the usage events."""
    quotas = {quota.primitive: quota.limit for quota in record.plan.quotas.all()}
    events = UsageEvent.objects.filter(user_id=record.user_id)
    within = events.filter(occurred_at__gte=record.cycle_start, occurred_at__lt=end)
    # Overage is counted per quota window; a window that began before this cycle (a plan
    # change that carried usage) counts its earlier usage against the quota first.
    usage: dict[str, dict[str, Any]] = {
        primitive: {"used": 0, "quota": limit, "overage": 0} for primitive, limit in quotas.items()
    }
    rows = within.values("primitive", "window_start").annotate(used=Sum("quantity"))
    for row in rows:
        entry = usage.setdefault(row["primitive"], {"used": 0, "quota": None, "overage": 0})
        entry["used"] += row["used"]
        if entry["quota"] is not None:
            before = (
                events.filter(
                    primitive=row["primitive"],
                    window_start=row["window_start"],
                    occurred_at__lt=record.cycle_start,
                ).aggregate(used=Sum("quantity"))["used"]
                or 0
            )
            quota = entry["quota"]
            entry["overage"] += max(0, before + row["used"] - quota) - max(0, before - quota)
    return usage


def _close(record: UsageRecord, status: str, *, end: datetime | None = None) -> UsageRecord:
    """Write the cycle's usage and close the record, once: a closed record is left as is."""
    end = end or record.cycle_end
    usage = usage_between(record, end)
    with transaction.atomic():
        closed = UsageRecord.objects.filter(pk=record.pk, status=Status.CURRENT).update(
            status=status, usage=usage, cycle_end=end, closed_at=timezone.now()
        )
        record.refresh_from_db()
        if closed:
            # The charge is decided with the close, in its transaction: never one without
            # the other.
            outbox.overage_charges(record)
            outbox.webhook("cycle.closed", key=f"billing-cycle-{record.pk}", data=as_json(record))
    return record
