"""Usage alerts: ``usage_threshold_crossed`` once per customer, primitive, window and
threshold. The reservation that moves a counter from below a threshold to at or above it
claims the alert with a unique row; concurrent calls cannot both claim it. The only writer
of :class:`UsageAlert`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction

from ..conf import billing_settings, customer_id_json, customer_model
from ..models import UsageAlert
from ..outbox import services as outbox
from ..periods import Window
from ..signals import credit_balance_low, usage_threshold_crossed


def note(
    *, customer_id: Any, primitive: str, window: Window, before: int, after: int, limit: int
) -> None:
    """Send the alerts of the thresholds that ``before`` -> ``after`` crossed."""
    if limit <= 0:
        return
    for threshold in billing_settings.USAGE_ALERT_THRESHOLDS:
        if before < threshold * limit <= after:
            _claim(customer_id, primitive, window, Decimal(str(threshold)), after, limit)


def _claim(
    customer_id: Any, primitive: str, window: Window, threshold: Decimal, usage: int, limit: int
) -> None:
    try:
        with transaction.atomic():
            UsageAlert.objects.create(
                customer_id=customer_id,
                primitive=primitive,
                window_start=window.start,
                threshold=threshold,
                usage=usage,
                limit=limit,
            )
            outbox.webhook_add(
                "usage.threshold_crossed",
                key=f"billing-alert-{customer_id}-{primitive}-"
                f"{window.start:%Y%m%dT%H%M%S%f}-{threshold}",
                data={
                    "customerId": customer_id_json(customer_id),
                    "primitive": primitive,
                    "threshold": float(threshold),
                    "usage": usage,
                    "limit": limit,
                    "windowStart": window.start.isoformat(),
                    "windowEnd": window.end.isoformat(),
                },
            )
    except IntegrityError:
        return  # another call crossed it first

    def send() -> None:
        customer = customer_model()._default_manager.get(pk=customer_id)
        usage_threshold_crossed.send(
            sender=UsageAlert,
            customer=customer,
            primitive=primitive,
            threshold=float(threshold),
            usage=usage,
            limit=limit,
            window=window,
        )

    transaction.on_commit(send)


def credits_note(*, customer_id: Any, before: int, after: int, granted: int, since: Any) -> None:
    """Send the low-balance alerts of the thresholds that ``before`` -> ``after`` crossed
    (downwards), once per threshold since the active grants last changed."""
    if granted <= 0 or since is None:
        return
    for threshold in billing_settings.CREDIT_ALERT_THRESHOLDS:
        if after <= threshold * granted < before:
            _claim_credits(customer_id, Decimal(str(threshold)), after, granted, since)


def _claim_credits(
    customer_id: Any, threshold: Decimal, balance: int, granted: int, since: Any
) -> None:
    try:
        with transaction.atomic():
            UsageAlert.objects.create(
                customer_id=customer_id,
                primitive=CREDITS,
                window_start=since,
                threshold=threshold,
                usage=balance,
                limit=granted,
            )
            outbox.webhook_add(
                "credits.low",
                key=f"billing-credits-{customer_id}-{since:%Y%m%dT%H%M%S%f}-{threshold}",
                data={
                    "customerId": customer_id_json(customer_id),
                    "threshold": float(threshold),
                    "balance": balance,
                    "granted": granted,
                },
            )
    except IntegrityError:
        return

    def send() -> None:
        customer = customer_model()._default_manager.get(pk=customer_id)
        credit_balance_low.send(
            sender=UsageAlert,
            customer=customer,
            threshold=float(threshold),
            balance=balance,
            granted=granted,
        )

    transaction.on_commit(send)


# The primitive name credit alerts are kept under (no primitive slug can start with "_").
CREDITS = "_credits"
