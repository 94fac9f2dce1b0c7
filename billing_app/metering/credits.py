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
every draw that came before it. :func:`credits_state` computes the same without writing,
for what is shown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import F, Max, Sum
from django.utils import timezone

from ..conf import billing_settings
from ..entitlements import entitlements_changed
from ..models import (
    BillingPeriod,
    CreditAutoTopUp,
    CreditBalance,
    CreditEntry,
    CreditGrant,
    CreditPack,
    OutboxMessage,
    PlanCredits,
    Subscription,
)
from ..outbox import services as outbox
from ..validation import MAX_BIGINT, check_count, full_clean, invalid

logger = logging.getLogger(__name__)

Source = CreditGrant.Source
State = CreditGrant.State
Kind = CreditEntry.Kind
ORDER = ("priority", F("expires_at").asc(nulls_last=True), "effective_at", "pk")


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
    _balance_locked(customer_id)
    if source_ref:
        known = CreditGrant.objects.filter(source=source, source_ref=source_ref).first()
        if known is not None:
            return known
    if amount > _room(customer_id):
        raise invalid("amount", "The balance cannot hold that many more credits.")
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


@transaction.atomic
def credit_pack_upsert(
    *,
    key: str,
    name: str,
    credits: int,
    stripe_price_id: str = "",
    expires_after_days: int | None = None,
    active: bool = True,
) -> tuple[CreditPack, bool]:
    check_count("credits", credits, what="credits", minimum=1)
    pack, created = CreditPack.objects.select_for_update().get_or_create(
        key=key, defaults={"name": name, "credits": credits}
    )
    pack.name, pack.credits, pack.active = name, credits, bool(active)
    pack.stripe_price_id = stripe_price_id or ""
    pack.expires_after_days = expires_after_days
    full_clean(pack)
    pack.save()
    return pack, created


# --- bringing a balance up to date -----------------------------------------------------


@dataclass
class Projection:
    """A balance brought up to date in memory: what the refresh writes, and shows."""

    balance: int
    valid_until: datetime | None
    grants: list[CreditGrant]
    entries: list[tuple[int, str, datetime, CreditGrant]] = field(default_factory=list)
    allocated_through: int = 0


def credits_refresh(*, customer_id: Any, at: datetime | None = None) -> CreditBalance:
    """Bring the customer's balance up to date (see the module's docstring)."""
    with transaction.atomic():
        return _refresh(customer_id, at or timezone.now())


def credits_state(*, customer_id: Any, at: datetime | None = None) -> Projection:
    """The balance and the grants as a refresh now would make them, without writing; the
    grants in the order draws take from them."""
    row = CreditBalance.objects.filter(customer_id=customer_id).first()
    projection = _project(customer_id, row or CreditBalance(customer_id=customer_id), at)
    projection.grants.sort(key=_draw_order)
    return projection


def _draw_order(grant: CreditGrant) -> tuple[Any, ...]:
    """``ORDER`` in Python: grants made by the projection (no key yet) after the saved."""
    never = datetime.max.replace(tzinfo=UTC)
    return (
        grant.priority,
        grant.expires_at or never,
        grant.effective_at,
        grant.pk is None,
        grant.pk or 0,
    )


def balance_of(*, customer_id: Any) -> int:
    return credits_state(customer_id=customer_id).balance


def _room(customer_id: Any) -> int:
    """How many more credits may be granted: the live grants' amounts bound the balance
    and what is granted, whose columns hold at most 2^63 - 1. Summed here, not in SQL,
    whose SUM would overflow first."""
    live = CreditGrant.objects.filter(
        customer_id=customer_id, state__in=[State.PENDING, State.ACTIVE]
    ).values_list("amount", flat=True)
    return max(0, MAX_BIGINT - sum(live))


def _balance_locked(customer_id: Any) -> CreditBalance:
    CreditBalance.objects.get_or_create(customer_id=customer_id)
    return CreditBalance.objects.select_for_update().get(customer_id=customer_id)


def _refresh(customer_id: Any, at: datetime) -> CreditBalance:
    row = _balance_locked(customer_id)
    _plan_grant_ensure(customer_id, at)
    projection = _project(customer_id, row, at, lock=True)
    for grant in projection.grants:
        if grant.pk is None:
            grant.save()
        else:
            grant.save(update_fields=["state", "remaining", "expires_at", "updated_at"])
    last = projection.allocated_through
    for delta, kind, when, grant in projection.entries:
        entry = CreditEntry.objects.create(
            customer_id=customer_id, delta=delta, kind=kind, grant=grant, at=when
        )
        last = max(last, entry.pk)
    granted = sum(g.amount for g in projection.grants if g.state == State.ACTIVE)
    changes: dict[str, Any] = {}
    if projection.entries or granted != row.granted:
        # The active grants changed: alerts count afresh, and entitlements say so.
        changes = {"granted": granted, "granted_since": at}
        entitlements_changed(customer_ids=[customer_id])
    CreditBalance.objects.filter(pk=row.pk).update(
        balance=F("balance") + sum(delta for delta, *_ in projection.entries),
        valid_until=projection.valid_until,
        allocated_through=last,
        **changes,
    )
    row.refresh_from_db()
    return row


def _project(
    customer_id: Any, row: CreditBalance, at: datetime | None, *, lock: bool = False
) -> Projection:
    at = at or timezone.now()
    grants_query = CreditGrant.objects.filter(
        customer_id=customer_id, state__in=[State.PENDING, State.ACTIVE]
    ).order_by(*ORDER)
    grants = list(grants_query.select_for_update() if lock else grants_query)
    if not lock and (missing := _plan_grant_missing(customer_id, at)) is not None:
        grants.append(missing)  # what the refresh would make
    new = CreditEntry.objects.filter(
        customer_id=customer_id, pk__gt=row.allocated_through, kind__in=[Kind.DRAW, Kind.REFUND]
    )
    totals = new.aggregate(total=Sum("delta"), last=Max("pk"))
    projection = Projection(
        balance=row.balance,
        valid_until=None,
        grants=grants,
        allocated_through=max(row.allocated_through, totals["last"] or 0),
    )
    _allocate(customer_id, [g for g in grants if g.state == State.ACTIVE], -(totals["total"] or 0))
    for grant in list(grants):
        if grant.state == State.PENDING and grant.effective_at <= at:
            # One that has also run out starts and expires here: no draw could use it.
            grant.state, grant.remaining = State.ACTIVE, grant.amount
            projection.entries.append((grant.amount, Kind.GRANT, grant.effective_at, grant))
    for grant in list(grants):
        if grant.state == State.ACTIVE and grant.expires_at is not None and grant.expires_at <= at:
            _expire(projection, grant)
    projection.balance += sum(delta for delta, *_ in projection.entries)
    upcoming = [g.effective_at for g in projection.grants if g.state == State.PENDING] + [
        g.expires_at
        for g in projection.grants
        if g.state == State.ACTIVE and g.expires_at is not None
    ]
    projection.valid_until = min(upcoming) if upcoming else None
    return projection


def _allocate(customer_id: Any, active: list[CreditGrant], consumed: int) -> None:
    """``consumed`` credits (net of refunds) drawn since the last refresh, taken from the
    active grants in their order; a net refund goes back to them, up to what each gave."""
    if consumed >= 0:
        for grant in active:
            taken = min(consumed, grant.remaining)
            grant.remaining -= taken
            consumed -= taken
    else:
        consumed = -consumed
        for grant in active:
            back = min(consumed, grant.amount - grant.remaining)
            grant.remaining += back
            consumed -= back
    if consumed:
        logger.error(
            "Credits of customer %s could not be allocated to its grants (%s left).",
            customer_id,
            consumed,
        )


def _expire(projection: Projection, grant: CreditGrant) -> None:
    assert grant.expires_at is not None
    left = grant.remaining
    grant.state, grant.remaining = State.EXPIRED, 0
    if left:
        projection.entries.append((-left, Kind.EXPIRY, grant.expires_at, grant))
    rolled = min(left, grant.rollover_cap)
    if rolled:
        rollover = CreditGrant(
            customer_id=grant.customer_id,
            amount=rolled,
            remaining=rolled,
            priority=grant.priority,
            effective_at=grant.expires_at,
            expires_at=(
                grant.expires_at + timedelta(days=grant.rollover_days)
                if grant.rollover_days
                else None
            ),
            source=Source.ROLLOVER,
            source_ref=f"grant:{grant.pk}",
            reason=f"Rolled over from grant {grant.pk}",
            state=State.ACTIVE,
        )
        projection.grants.append(rollover)
        projection.entries.append((rolled, Kind.GRANT, grant.expires_at, rollover))


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
    missing = _plan_grant_missing(customer_id, at)
    if missing is not None:
        missing.save()


def _plan_grant_missing(customer_id: Any, at: datetime) -> CreditGrant | None:
    """The plan grant of the period containing ``at`` when its plan gives credits and it
    has not been made yet (unsaved), else None."""
    subscription = Subscription.objects.filter(customer_id=customer_id).first()
    if subscription is None or subscription.ended:
        return None
    period = (
        BillingPeriod.objects.select_related("plan")
        .filter(customer_id=customer_id, start__lte=at, end__gt=at)
        .first()
    )
    if period is None:
        return None
    config = PlanCredits.objects.filter(plan_id=period.plan_id).first()
    if config is None or not config.per_period:
        return None
    ref = f"period:{period.pk}"
    if CreditGrant.objects.filter(source=Source.PLAN, source_ref=ref).exists():
        return None
    # As much of the period's credits as the balance can hold (all of it, short of 2^63).
    amount = min(config.per_period, _room(customer_id))
    if not amount:
        return None
    return CreditGrant(
        customer_id=customer_id,
        amount=amount,
        priority=100,
        effective_at=period.start,
        expires_at=period.end,
        rollover_cap=config.rollover_cap,
        rollover_days=config.rollover_days,
        source=Source.PLAN,
        source_ref=ref,
        reason=f"{period.plan.key}: credits of the period from {period.start:%Y-%m-%d}",
    )


# --- auto top-ups ----------------------------------------------------------------------


@transaction.atomic
def credits_auto_top_up_set(
    *,
    customer_id: Any,
    pack_key: str | None,
    below: int = 0,
    monthly_cap: int = 1,
) -> CreditAutoTopUp | None:
    """Buy the credit pack ``pack_key`` for the customer whenever a metered call leaves its
    balance below ``below``, at most ``monthly_cap`` times a calendar month (in
    ``BILLING_TIME_ZONE``). ``pack_key=None`` turns it off. The pack must be on sale (active,
    with a Stripe price)."""
    if pack_key is None:
        CreditAutoTopUp.objects.filter(customer_id=customer_id).delete()
        entitlements_changed(customer_ids=[customer_id])
        return None
    check_count("below", below, what="below", minimum=1)
    check_count("monthly_cap", monthly_cap, what="monthly_cap", minimum=1, maximum=1000)
    pack = (
        CreditPack.objects.filter(key=pack_key, active=True).exclude(stripe_price_id="").first()
        if isinstance(pack_key, str)
        else None
    )
    if pack is None:
        raise invalid("pack_key", f"{pack_key!r} is not a credit pack on sale.")
    top_up, _ = CreditAutoTopUp.objects.update_or_create(
        customer_id=customer_id,
        defaults={"pack": pack, "below": below, "monthly_cap": monthly_cap, "active": True},
    )
    # The entitlement carries the threshold, so a draw needs no query to know it.
    entitlements_changed(customer_ids=[customer_id])
    return top_up


def credits_auto_top_up(*, customer_id: Any, at: datetime | None = None) -> CreditGrant | None:
    """When the balance is below the customer's auto top-up threshold and this month's
    top-ups are fewer than its cap: give the pack's credits and charge the pack to the
    customer's Stripe customer (an invoice item on its next invoice, through the outbox).
    Once: the n-th top-up of a month is keyed by its number, and concurrent callers
    serialise on the balance row, so the second finds the balance topped up. Answers the
    grant made, or None. Reads Stripe's price as dj-stripe synced it; calls no one."""
    at = at or timezone.now()
    config = (
        CreditAutoTopUp.objects.select_related("pack")
        .filter(customer_id=customer_id, active=True)
        .first()
    )
    if config is None or not config.pack.active or not config.pack.stripe_price_id:
        return None
    charge = _pack_charge(customer_id, config.pack)
    if charge is None:
        return None
    month = timezone.localtime(at, ZoneInfo(billing_settings.TIME_ZONE)).strftime("%Y-%m")
    prefix = f"topup:{customer_id}:{month}:"
    with transaction.atomic():
        row = _balance_locked(customer_id)
        if row.balance >= config.below:
            return None
        made = CreditGrant.objects.filter(
            source=Source.PURCHASE, source_ref__startswith=prefix
        ).count()
        if made >= config.monthly_cap:
            return None
        number = made + 1
        pack = config.pack
        grant = credits_grant(
            customer_id=customer_id,
            amount=pack.credits,
            source=Source.PURCHASE,
            source_ref=f"{prefix}{number}",
            reason=f"Auto top-up {number} of {month}: pack {pack.key}",
            expires_at=at + timedelta(days=pack.expires_after_days)
            if pack.expires_after_days
            else None,
        )
        outbox.message_add(
            kind=OutboxMessage.Kind.STRIPE_INVOICE_ITEM,
            key=f"billing-topup-{customer_id}-{month}-{number}",
            payload={
                **charge,
                "description": f"{pack.name} (auto top-up)",
                "metadata": {
                    billing_settings.STRIPE_METADATA_KEY: str(customer_id),
                    "billing_credit_pack": pack.key,
                    "billing_credit_grant": str(grant.pk),
                },
            },
        )
    return grant


def _pack_charge(customer_id: Any, pack: CreditPack) -> dict[str, Any] | None:
    """The invoice item's customer, amount and currency: the customer's Stripe customer
    and the pack's Stripe price as dj-stripe synced it; None (logged) when either is
    missing, as nothing could be charged."""
    from djstripe.models import Price

    stripe_customer = (
        Subscription.objects.filter(customer_id=customer_id)
        .exclude(stripe_customer_id="")
        .values_list("stripe_customer_id", flat=True)
        .first()
    )
    price = Price.objects.filter(id=pack.stripe_price_id).first()
    if not stripe_customer or price is None or price.unit_amount is None:
        logger.warning(
            "No auto top-up for customer %s: %s.",
            customer_id,
            "no Stripe customer" if not stripe_customer else f"{pack.stripe_price_id} not synced",
        )
        return None
    return {"customer": stripe_customer, "amount": price.unit_amount, "currency": price.currency}
