"""Usage alerts: ``usage_threshold_crossed`` once per tenant, primitive, window and
threshold. The reservation that moves a counter from below a threshold to at or above it
claims the alert with a unique row; concurrent calls cannot both claim it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from . import outbox
from .conf import billing_settings
from .models import UsageAlert
from .periods import Window
from .signals import usage_threshold_crossed


def note(
    *, user_id: Any, primitive: str, window: Window, before: int, after: int, limit: int | None
) -> None:
    """Send the alerts of the thresholds that ``before`` -> ``after`` crossed."""
    if not limit:
        return
    for threshold in billing_settings.USAGE_ALERT_THRESHOLDS:
        if before < threshold * limit <= after:
            _claim(user_id, primitive, window, Decimal(str(threshold)), after, limit)


def _claim(
    user_id: Any, primitive: str, window: Window, threshold: Decimal, usage: int, limit: int
) -> None:
    try:
        with transaction.atomic():
            UsageAlert.objects.create(
                user_id=user_id,
                primitive=primitive,
                window_start=window.start,
                threshold=threshold,
                usage=usage,
                limit=limit,
            )
            outbox.webhook(
                "usage.threshold_crossed",
                key=f"billing-alert-{user_id}-{primitive}-{window.start:%Y%m%dT%H%M%S%f}-{threshold}",
                data={
                    "userId": user_id,
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
        tenant = get_user_model()._default_manager.get(pk=user_id)
        usage_threshold_crossed.send(
            sender=UsageAlert,
            tenant=tenant,
            primitive=primitive,
            threshold=float(threshold),
            usage=usage,
            limit=limit,
            window=window,
        )

    transaction.on_commit(send)
