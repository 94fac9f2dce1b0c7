"""Prepaid credits: the only writer of grants, balances and their entries, but for the
draws metered calls make (the reservation statement in ``ledger`` writes those).

A balance changes by entries only: a grant becoming effective (+), a draw (-), the
refund of a failed call's draw (+), an expiry (-). A grant starts or expires at a known
instant; the balance row keeps the next such instant (``valid_until``), the reservation
refuses to draw past it, and :func:`credits_refresh` brings the balance up to date:

1. allocate the draws and refunds since the last refresh to the grants they drew on, in
   the grants' order (priority, then soonest expiry). Between two refreshes no grant starts
   or expires, so drawing from one pool and allocating afterwards is the same as allocating
   each draw as it happens;
2. start the grants that have become effective (a plan's grant for the current billing
   period is made here when missing);
3. expire the grants whose time has come: what is left of each goes, up to its rollover
   cap into a new grant that lasts its rollover days.

Refreshes and draws of one customer serialise on its balance row, so the allocation sees
every draw that came before it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from ..models import (
    BillingPeriod,
    CreditBalance,
    CreditEntry,
    CreditGrant,
    PlanCredits,
    Subscription,
)
from ..validation import check_count, invalid

logger = logging.getLogger(__name__)

Source = CreditGrant.Source
State = CreditGrant.State
Kind = CreditEntry.Kind


@transaction.atomic
def credits_grant(
    *,
    customer_id: Any,
    amount: int,
    source: str,
    source_ref: str = "",
    reason: str = "",
    granted_by: Any = None,
    priority: int = 100,
    effective_at: datetime | None = None,
    expires_at: datetime | None = None,
    rollover_cap: int = 0,
    rollover_days: int | None = None,
) -> CreditGrant:
    """Give credits. A grant with a ``source_ref`` is made once: the same source and
    reference again answers the first grant (a webhook delivered twice grants once). An
    operator's grant needs a reason."""
    check_count("amount", amount, what="amount", minimum=1)
    check_count("priority", priority, what="priority", maximum=1_000_000)
    if source not in Source.values:
        raise invalid("source", f"One of {', '.join(Source.values)}.")
    if source == Source.MANUAL and not (isinstance(reason, str) and reason.strip()):
        raise invalid("reason", "Say why the credits are granted.")
    now = timezone.now()
    effective_at = effective_at or now
    if expires_at is not None and expires_at <= effective_at:
        raise invalid("expires_at", "A grant must expire after it takes effect.")
    if source_ref:
        known = CreditGrant.objects.filter(source=source, source_ref=source_ref).first()
        if known is not None:
            return known
    _balance_locked(customer_id)
    grant = CreditGrant.objects.create(
        customer_id=customer_id,
        amount=amount,
        priority=priority,
        effective_at=effective_at,
        expires_at=expires_at,
        rollover_cap=rollover_cap,
        rollover_days=rollover_days,
        source=source,
        source_ref=source_ref,
        reason=reason.strip(),
        granted_by=granted_by,
    )
    _refresh(customer_id, now)
    return grant


def credits_refresh(*, customer_id: Any, at: datetime | None = None) -> CreditBalance:
    """Bring the customer's balance up to date (see the module's docstring)."""
    with transaction.atomic():
        return _refresh(customer_id, at or timezone.now())


def _balance_locked(customer_id: Any) -> CreditBalance:
    CreditBalance.objects.get_or_create(customer_id=customer_id)
    return CreditBalance.objects.select_for_update().get(customer_id=customer_id)


def _refresh(customer_id: Any, at: datetime) -> CreditBalance:
    balance = _balance_locked(customer_id)
    _allocate(balance)
    _plan_grant_ensure(customer_id, at)
    for grant in CreditGrant.objects.filter(
        customer_id=customer_id, state=State.PENDING, effective_at__lte=at
    ):
        # One that has also run out starts here and expires below: no draw could use it.
        grant.state, grant.remaining = State.ACTIVE, grant.amount
        grant.save(update_fields=["state", "remaining", "updated_at"])
        _entry(balance, grant.amount, Kind.GRANT, at=grant.effective_at, grant=grant)
    for grant in CreditGrant.objects.filter(
        customer_id=customer_id, state=State.ACTIVE, expires_at__lte=at
    ):
        _expire(balance, grant)
    upcoming = [
        grant.effective_at
        for grant in CreditGrant.objects.filter(customer_id=customer_id, state=State.PENDING)
    ] + [
        grant.expires_at
        for grant in CreditGrant.objects.filter(
            customer_id=customer_id, state=State.ACTIVE, expires_at__isnull=False
        )
    ]
    balance.valid_until = min(upcoming) if upcoming else None
    balance.save(update_fields=["valid_until"])
    return balance


def _entry(
    balance: CreditBalance, delta: int, kind: str, *, at: datetime, grant: CreditGrant | None
) -> None:
    entry = CreditEntry.objects.create(
        customer_id=balance.customer_id, delta=delta, kind=kind, grant=grant, at=at
    )
    # Written by the refresh itself, and allocated already (to ``grant``).
    balance.balance += delta
    balance.allocated_through = max(balance.allocated_through, entry.pk)
    CreditBalance.objects.filter(pk=balance.pk).update(
        balance=F("balance") + delta, allocated_through=balance.allocated_through
    )


def _allocate(balance: CreditBalance) -> None:
    """Allocate the draws and refunds since the last refresh to the active grants."""
    new = CreditEntry.objects.filter(
        customer_id=balance.customer_id,
        pk__gt=balance.allocated_through,
        kind__in=[Kind.DRAW, Kind.REFUND],
    )
    last = new.order_by("-pk").values_list("pk", flat=True).first()
    if last is None:
        return
    net = -(new.aggregate(total=Sum("delta"))["total"] or 0)
    grants = list(
        CreditGrant.objects.select_for_update()
        .filter(customer_id=balance.customer_id, state=State.ACTIVE)
        .order_by("priority", F("expires_at").asc(nulls_last=True), "effective_at", "pk")
    )
    if net > 0:  # drawn: from the first grants on
        for grant in grants:
            taken = min(net, grant.remaining)
            grant.remaining -= taken
            net -= taken
    else:  # refunded more than drawn: back to the first grants, up to what they gave
        net = -net
        for grant in grants:
            back = min(net, grant.amount - grant.remaining)
            grant.remaining += back
            net -= back
    if net:
        logger.error(
            "Credits of customer %s could not be allocated to its grants (%s left).",
            balance.customer_id,
            net,
        )
    CreditGrant.objects.bulk_update(grants, ["remaining"])
    balance.allocated_through = max(balance.allocated_through, last)
    CreditBalance.objects.filter(pk=balance.pk).update(allocated_through=balance.allocated_through)


def _expire(balance: CreditBalance, grant: CreditGrant) -> None:
    left = grant.remaining
    grant.state, grant.remaining = State.EXPIRED, 0
    grant.save(update_fields=["state", "remaining", "updated_at"])
    assert grant.expires_at is not None
    if left:
        _entry(balance, -left, Kind.EXPIRY, at=grant.expires_at, grant=grant)
    rolled = min(left, grant.rollover_cap)
    if rolled:
        until = grant.expires_at + timedelta(days=grant.rollover_days or 0)
        rollover = CreditGrant.objects.create(
            customer_id=grant.customer_id,
            amount=rolled,
            remaining=rolled,
            priority=grant.priority,
            effective_at=grant.expires_at,
            expires_at=until if grant.rollover_days else None,
            source=Source.ROLLOVER,
            source_ref=f"grant:{grant.pk}",
            reason=f"Rolled over from grant {grant.pk}",
            state=State.ACTIVE,
        )
        _entry(balance, rolled, Kind.GRANT, at=grant.expires_at, grant=rollover)


def _plan_grant_ensure(customer_id: Any, at: datetime) -> None:
    """The plan's credits for the billing period containing ``at``, once per period; an
    active plan grant follows its period's end when Stripe moves it."""
    for grant in CreditGrant.objects.filter(
        customer_id=customer_id, source=Source.PLAN, state__in=[State.PENDING, State.ACTIVE]
    ):
        period = BillingPeriod.objects.filter(pk=grant.source_ref.removeprefix("period:")).first()
        if period is not None and period.end != grant.expires_at and period.end > at:
            grant.expires_at = period.end
            grant.save(update_fields=["expires_at", "updated_at"])
    subscription = Subscription.objects.filter(customer_id=customer_id).first()
    if subscription is None or subscription.ended:
        return
    period = BillingPeriod.objects.filter(
        customer_id=customer_id, start__lte=at, end__gt=at
    ).first()
    if period is None:
        return
    config = PlanCredits.objects.filter(plan_id=period.plan_id).first()
    if config is None or not config.per_period:
        return
    ref = f"period:{period.pk}"
    if CreditGrant.objects.filter(source=Source.PLAN, source_ref=ref).exists():
        return
    CreditGrant.objects.create(
        customer_id=customer_id,
        amount=config.per_period,
        priority=100,
        effective_at=period.start,
        expires_at=period.end,
        rollover_cap=config.rollover_cap,
        rollover_days=config.rollover_days,
        source=Source.PLAN,
        source_ref=ref,
        reason=f"{period.plan.key}: credits of the period from {period.start:%Y-%m-%d}",
    )


def balance_of(*, customer_id: Any) -> int:
    row = CreditBalance.objects.filter(customer_id=customer_id).first()
    return row.balance if row else 0
