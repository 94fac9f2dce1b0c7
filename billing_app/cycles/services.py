"""The only writer of usage records. A billing period that has ended gets its record once,
with its usage, its quota and overage per primitive, and the adjustments for late usage of
earlier periods; its charges and the ``cycle.closed`` webhook go to the outbox in the same
transaction. A record never changes."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from ..conf import customer_id_json
from ..models import (
    AdvanceCharge,
    BillingPeriod,
    OutboxMessage,
    Plan,
    PlanPrice,
    Problem,
    Subscription,
    UsageRecord,
)
from ..outbox.services import message_add, webhook_add
from ..problems import problem_clear, problem_record
from .pricing import Line, decimal_text
from .selectors import (
    advance_of,
    late_adjustments,
    late_charges,
    own_charges,
    period_usage,
    used_of,
)

logger = logging.getLogger(__name__)

Status = UsageRecord.Status
# Stripe refuses meter events older than 35 days; a little margin for the delivery.
METER_EVENT_MAX_AGE = timedelta(days=34)


def records_close(*, at: datetime | None = None) -> list[UsageRecord]:
    """Record every billing period that has ended. Safe to run often and from several
    schedulers at once (a period being recorded by one is skipped by the others); each
    period in its own transaction, and one that fails is logged, kept for the admin as a
    Problem, and skipped."""
    at = at or timezone.now()
    closed = []
    due = BillingPeriod.objects.filter(end__lte=at, record__isnull=True).order_by("end", "pk")
    for pk in list(due.values_list("pk", flat=True)):
        try:
            with transaction.atomic():
                period = (
                    BillingPeriod.objects.select_for_update(skip_locked=True, of=("self",))
                    .filter(pk=pk, record__isnull=True)
                    .first()
                )
                if period is None:
                    continue  # another scheduler has it, or has recorded it
                # The lock can be had just after another scheduler recorded the period and
                # committed, which the statement above, older than that commit, did not see.
                if UsageRecord.objects.filter(period_id=pk).exists():
                    continue
                closed.append(record_period(period, at=at))
        except Exception as error:
            logger.exception("Could not record billing period %s", pk)
            problem_record(
                kind=Problem.Kind.CYCLE_CLOSE,
                subject=f"period:{pk}",
                detail=f"{type(error).__name__}: {error}. Fix the cause; the next "
                "billing_close_cycles run records it.",
            )
    return closed


def record_period(period: BillingPeriod, *, at: datetime) -> UsageRecord:
    """Write the record of a period that has ended (the caller holds its lock)."""
    record = UsageRecord.objects.create(
        period=period,
        customer_id=period.customer_id,
        plan=period.plan,
        status=Status.FINAL
        if period.end_reason == BillingPeriod.EndReason.CANCELLATION
        else Status.RECORDED,
        usage=period_usage(period),
        adjustments=late_adjustments(customer_id=period.customer_id, before=period.start),
        closed_at=at,
    )
    overage_charges(record)
    price_charges(record, at=at)
    webhook_add("cycle.closed", key=f"billing-cycle-{record.pk}", data=record_json(record))
    problem_clear(subject=f"period:{period.pk}")
    return record


def record_json(record: UsageRecord) -> dict[str, Any]:
    return {
        "id": record.pk,
        "customerId": customer_id_json(record.customer_id),
        "plan": record.plan.key,
        "status": record.status,
        "cycleStart": record.period.start.isoformat(),
        "cycleEnd": record.period.end.isoformat(),
        "usage": record.usage,
        "adjustments": record.adjustments,
    }


def overage_charges(record: UsageRecord) -> list[OutboxMessage]:
    """The Stripe charges of a record's billed overage: its own, at its plan's prices, and
    its adjustments' (late usage of earlier periods), each at the prices of the period it
    belongs to. An invoice item per period and primitive, or meter events where that
    period's plan names a Stripe meter. Idempotent: the keys are the record's, the
    period's and the primitive's. An adjustment that takes overage back (a refund after a
    close) nets against the same period's other adjustments; a net credit is not sent."""
    subscription = Subscription.objects.filter(customer_id=record.customer_id).first()
    customer = subscription.stripe_customer_id if subscription else ""
    over: dict[tuple[int, str], int] = {}
    for primitive, entry in record.usage.items():
        over[(record.pk, primitive)] = entry.get("overage", 0)
    for adjustment in record.adjustments:
        of = (adjustment["periodId"], adjustment["primitive"])
        over[of] = over.get(of, 0) + adjustment["overage"]
    periods = {
        period.pk: period
        for period in BillingPeriod.objects.filter(pk__in={pk for pk, _ in over}).select_related(
            "plan"
        )
    }
    messages = []
    for (period_id, primitive), quantity in sorted(over.items()):
        period = periods[period_id]
        price = _overage_price(period.plan, primitive)
        if price is None or quantity <= 0:
            continue
        if not customer:
            logger.warning(
                "Overage of customer %s (%s x %s) not billed: no Stripe customer.",
                record.customer_id,
                quantity,
                primitive,
            )
            continue
        late = "" if period_id == record.pk else f"-late-{period_id}"
        key = f"billing-overage-{record.pk}-{primitive}{late}"
        messages.append(
            message_add(
                kind=_charge_kind(period.plan),
                key=key,
                payload=_charge(record, period, primitive, quantity, price, customer, key),
            )
        )
    return messages


def _overage_price(plan: Plan, primitive: str) -> Decimal | None:
    for quota in plan.quotas.all():
        if quota.primitive == primitive and quota.overage == "bill":
            return quota.overage_unit_price
    return None


def _charge_kind(plan: Plan) -> str:
    if plan.stripe_meter_event:
        return OutboxMessage.Kind.STRIPE_METER_EVENT
    return OutboxMessage.Kind.STRIPE_INVOICE_ITEM


def _charge(
    record: UsageRecord,
    period: BillingPeriod,
    primitive: str,
    quantity: int,
    price: Decimal,
    customer: str,
    key: str,
) -> dict[str, Any]:
    plan = period.plan
    if plan.stripe_meter_event:
        # Stripe takes meter events up to 35 days old: a period closed later than that is
        # reported now, and still billed in the invoice that is open.
        oldest = timezone.now() - METER_EVENT_MAX_AGE
        return {
            "event_name": plan.stripe_meter_event,
            "identifier": key,
            "timestamp": int(max(period.end - timedelta(seconds=1), oldest).timestamp()),
            "payload": {"stripe_customer_id": customer, "value": str(quantity)},
        }
    late = "" if period.pk == record.pk else " (reported late)"
    gauge = record.usage.get(primitive, {}).get("kind") == "gauge"
    over = "over the limit on average" if gauge else "over the quota"
    return {
        "customer": customer,
        "currency": plan.currency,
        "quantity": quantity,
        "unit_amount_decimal": f"{Decimal(price).normalize():f}",
        "description": (
            f"{primitive}: {quantity} {over}{late}, "
            f"{period.start:%Y-%m-%d} to {period.end:%Y-%m-%d}"
        ),
        "period": {"start": int(period.start.timestamp()), "end": int(period.end.timestamp())},
        "metadata": {
            "billing_record": str(record.pk),
            "billing_period": str(period.pk),
            "primitive": primitive,
        },
    }


# --- charges under the plans' prices ---------------------------------------------------


def price_charges(record: UsageRecord, *, at: datetime) -> list[OutboxMessage]:
    """The Stripe invoice items of a closed period under its plan's prices: its usage in
    arrears and the minimum commitment's top-up (its in-advance charge is sent first if
    the period opened without it), and the late usage of earlier periods at those
    periods' prices. Each line is one invoice item on the customer's Stripe
    subscription's next invoice; the keys are the record's, the primitive's and the
    line's, so a retry never charges twice."""
    period = record.period
    in_advance = period.plan.prices.filter(payment_terms=PlanPrice.PaymentTerms.IN_ADVANCE)
    if in_advance.exists() and not AdvanceCharge.objects.filter(period=period).exists():
        advance_charge_add(period, at=at)
    own = own_charges(period, used_of(record.usage))
    lines = [(period, line) for line in own.lines if not line.line.startswith("advance-")]
    lines += late_charges(
        customer_id=record.customer_id, adjustments=record.adjustments, exclude_record=record.pk
    )
    return _invoice_items(record.customer_id, f"billing-charge-{record.pk}", lines)


def advance_charges_add(*, at: datetime | None = None) -> list[AdvanceCharge]:
    """Charge every period that has opened with in-advance prices and has not been
    charged yet: the included quantity of those prices, as invoice items. A period that
    Stripe drives is charged once Stripe states it (a predicted one may yet move), one
    that the operator manages when it opens. Each period in its own transaction, safe
    from several schedulers at once."""
    at = at or timezone.now()
    due = (
        BillingPeriod.objects.filter(
            start__lte=at,
            record__isnull=True,
            advance_charge__isnull=True,
            plan__prices__payment_terms=PlanPrice.PaymentTerms.IN_ADVANCE,
        )
        .exclude(source=BillingPeriod.Source.CADENCE, subscription__stripe_subscription_id__gt="")
        .order_by("start", "pk")
        .distinct()
    )
    charged = []
    for pk in list(due.values_list("pk", flat=True)):
        try:
            with transaction.atomic():
                period = (
                    BillingPeriod.objects.select_for_update(skip_locked=True, of=("self",))
                    .select_related("plan")
                    .filter(pk=pk, record__isnull=True)
                    .first()
                )
                if period is None or AdvanceCharge.objects.filter(period=period).exists():
                    continue
                charged.append(advance_charge_add(period, at=at))
                problem_clear(subject=f"advance:{pk}")
        except Exception as error:
            logger.exception("Could not charge billing period %s in advance", pk)
            problem_record(
                kind=Problem.Kind.CYCLE_CLOSE,
                subject=f"advance:{pk}",
                detail=f"Its in-advance charge failed: {type(error).__name__}: {error}. Fix "
                "the cause; the next billing_close_cycles run charges it.",
            )
    return charged


def advance_charge_add(period: BillingPeriod, *, at: datetime) -> AdvanceCharge:
    """Charge a period in advance (the caller holds its lock): its lines are kept, and
    sent as invoice items keyed by the period, the primitive and the line."""
    lines = advance_of(period)
    charge = AdvanceCharge.objects.create(
        period=period,
        customer_id=period.customer_id,
        plan=period.plan,
        period_start=period.start,
        period_end=period.end,
        lines=[line.as_json() for line in lines],
        charged_at=at,
    )
    _invoice_items(
        period.customer_id, f"billing-advance-{period.pk}", [(period, line) for line in lines]
    )
    return charge


def _invoice_items(
    customer_id: Any, prefix: str, lines: list[tuple[BillingPeriod, Line]]
) -> list[OutboxMessage]:
    """One invoice item per line with an amount, on the customer's Stripe subscription
    while it lives (on the customer's next invoice once it has ended)."""
    lines = [(period, line) for period, line in lines if line.amount != 0]
    if not lines:
        return []
    subscription = Subscription.objects.filter(customer_id=customer_id).first()
    customer = subscription.stripe_customer_id if subscription else ""
    if not customer:
        logger.warning(
            "Charges of customer %s (%s) not billed: no Stripe customer.",
            customer_id,
            ", ".join(
                f"{line.primitive or line.line} {decimal_text(line.amount)}" for _, line in lines
            ),
        )
        return []
    live = subscription is not None and not subscription.ended
    messages = []
    for period, line in lines:
        if line.amount < 0:
            # Late usage taken back after a close: like overage, a net credit is not sent.
            logger.info("Not sent: a credit of %s for %s.", line.amount, line.description)
            continue
        key = f"{prefix}-{line.primitive or 'plan'}-{line.line}"
        payload: dict[str, Any] = {
            "customer": customer,
            "currency": period.plan.currency,
            "quantity": line.quantity,
            "unit_amount_decimal": decimal_text(line.unit_amount),
            "description": _description(period, line),
            "period": {"start": int(period.start.timestamp()), "end": int(period.end.timestamp())},
            "metadata": {
                "billing_period": str(period.pk),
                "primitive": line.primitive,
                "line": line.line,
            },
        }
        if live and subscription is not None and subscription.stripe_subscription_id:
            payload["subscription"] = subscription.stripe_subscription_id
        messages.append(
            message_add(kind=OutboxMessage.Kind.STRIPE_INVOICE_ITEM, key=key, payload=payload)
        )
    return messages


def _description(period: BillingPeriod, line: Line) -> str:
    what = f"{line.primitive}, {line.description}" if line.primitive else line.description
    return f"{period.plan.display_name}: {what} ({period.start:%Y-%m-%d} to {period.end:%Y-%m-%d})"
