"""Usage records: what each billing period's usage came to, written once it ends."""

from __future__ import annotations

from django.db import models

from .catalog import Plan, TimeStamped
from .customers import CUSTOMER_MODEL
from .subscriptions import BillingPeriod


class UsageRecord(TimeStamped):
    """One closed billing period's usage: per primitive the used quantity, the quota and
    the overage, plus the adjustments for usage that arrived after an earlier period had
    closed. ``recorded`` when the period ran its course or a plan change ended it,
    ``final`` when the subscription ended. Written once, never changed. The open period's
    record (``current``) is not stored: it is read from the events as they are."""

    class Status(models.TextChoices):
        CURRENT = "current"
        RECORDED = "recorded"
        FINAL = "final"

    period = models.OneToOneField(
        BillingPeriod, on_delete=models.PROTECT, primary_key=True, related_name="record"
    )
    customer = models.ForeignKey(CUSTOMER_MODEL, on_delete=models.CASCADE, related_name="+")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=8, choices=Status.choices)
    # {primitive: {"used": n, "quota": n | None, "overage": n}}
    usage = models.JSONField(default=dict, blank=True)
    # [{"periodId": id, "primitive": p, "used": delta, "overage": delta}]: late usage of
    # earlier, closed periods, billed with this one.
    adjustments = models.JSONField(default=list, blank=True)
    closed_at = models.DateTimeField()

    class Meta:
        ordering = ["-period__start"]

    def __str__(self) -> str:
        return f"{self.period} ({self.status})"


class AdvanceCharge(models.Model):
    """What a billing period was charged when it opened: the included quantity of its
    in-advance prices, priced then. Written once per period, with its outbox messages;
    read when the period closes (the minimum commitment counts it) and by the preview. It
    outlives its period should Stripe's periods later replace it: the charge was sent."""

    period = models.OneToOneField(
        BillingPeriod,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="advance_charge",
    )
    customer = models.ForeignKey(CUSTOMER_MODEL, on_delete=models.CASCADE, related_name="+")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    # [{"primitive", "line", "description", "quantity", "unitAmount", "amount"}]
    lines = models.JSONField(default=list, blank=True)
    charged_at = models.DateTimeField()

    class Meta:
        ordering = ["-period_start"]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.period_start:%Y-%m-%d} (in advance)"
