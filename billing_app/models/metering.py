"""The usage ledger: events, the counters derived from them, and what hangs off them."""

from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from .catalog import PrimitiveField
from .customers import CUSTOMER_MODEL


class UsageCounter(models.Model):
    """Running total of one customer, one primitive, one quota window.

    A row belongs to one window, so a new window starts from zero with no reset job. The
    hot path reserves with one conditional upsert on the unique index below.
    """

    customer = models.ForeignKey(CUSTOMER_MODEL, on_delete=models.CASCADE, related_name="+")
    primitive = PrimitiveField()
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    used = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "primitive", "window_start"],
                name="billing_counter_window_unique",
            ),
            models.CheckConstraint(condition=Q(used__gte=0), name="billing_counter_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.customer} {self.primitive} {self.window_start:%Y-%m-%d}: {self.used}"


class UsageEvent(models.Model):
    """One recorded use. Append-only (a failed call's reservation is deleted): the counters
    and the usage records are derived from these. No unique constraint but the key, so the
    table can be partitioned by time; idempotency keys live in :class:`IdempotencyKey`."""

    customer = models.ForeignKey(CUSTOMER_MODEL, on_delete=models.CASCADE, related_name="+")
    primitive = PrimitiveField()
    quantity = models.BigIntegerField(validators=[MinValueValidator(1)])
    occurred_at = models.DateTimeField(help_text=_("When the use happened"))
    recorded_at = models.DateTimeField(help_text=_("When it was recorded"))
    window_start = models.DateTimeField(help_text=_("Start of the quota window it counts in"))
    idempotency_key = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-occurred_at"]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gte=1), name="billing_event_quantity"),
        ]
        indexes = [
            models.Index(
                fields=["customer", "primitive", "window_start"], name="billing_event_window_idx"
            ),
            models.Index(fields=["customer", "occurred_at"], name="billing_event_occurred_idx"),
            models.Index(
                fields=["customer", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="billing_event_key_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.primitive} x{self.quantity}"


class IdempotencyKey(models.Model):
    """An idempotency key a customer sent: its event (the one with the same customer and
    key) is recorded once however often, and however concurrently, the key is sent. Both
    are written, and refunded, together."""

    customer = models.ForeignKey(CUSTOMER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    # Hash of what the key was first sent with: the same key with another body is a 409.
    fingerprint = models.CharField(max_length=64)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "key"], name="billing_idempotency_unique")
        ]

    def __str__(self) -> str:
        return self.key


class RateCounter(models.Model):
    """Calls of one primitive by one customer in the current minute, for a kit's
    per-minute rate limit. One row per customer and primitive, reused minute after minute.
    """

    customer = models.ForeignKey(CUSTOMER_MODEL, on_delete=models.CASCADE, related_name="+")
    primitive = PrimitiveField()
    minute = models.DateTimeField()
    calls = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "primitive"], name="billing_rate_unique")
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.primitive} {self.minute:%H:%M}: {self.calls}"


class UsageAlert(models.Model):
    """A usage threshold a customer crossed in a quota window: the row makes the alert
    once."""

    customer = models.ForeignKey(CUSTOMER_MODEL, on_delete=models.CASCADE, related_name="+")
    primitive = PrimitiveField()
    window_start = models.DateTimeField()
    threshold = models.DecimalField(max_digits=6, decimal_places=4)
    usage = models.BigIntegerField()
    limit = models.BigIntegerField()
    crossed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "primitive", "window_start", "threshold"],
                name="billing_alert_once",
            )
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.primitive} {self.threshold:%}"


class GaugeLevel(models.Model):
    """The level of one customer's gauge (storage in bytes, say): it goes up and down and
    has no window. Rebuilt from its events at any time (the sum of their deltas); the hot
    path changes it with one conditional upsert on the unique index below."""

    customer = models.ForeignKey(CUSTOMER_MODEL, on_delete=models.CASCADE, related_name="+")
    primitive = PrimitiveField()
    level = models.BigIntegerField(default=0)
    # The delta of the latest change: the statement that changes the level returns it, so
    # the change's event is written in the same statement without reading the old level.
    last_change = models.BigIntegerField(default=0)
    # When it last changed; never goes back, so events in id order are in time order too.
    changed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "primitive"], name="billing_gauge_level_unique"
            ),
            models.CheckConstraint(condition=Q(level__gte=0), name="billing_gauge_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.primitive}: {self.level}"


class GaugeEvent(models.Model):
    """One change of a gauge: what was asked (``op``, ``amount``) and what it did
    (``delta``, ``level_after``). Append-only; the level is the sum of the deltas, and the
    usage record of a period integrates ``level_after`` over time. An idempotency key is
    recorded once per customer: its change is made once however often it is sent."""

    class Op(models.TextChoices):
        ADD = "add"
        SUBTRACT = "subtract"
        SET = "set"

    customer = models.ForeignKey(CUSTOMER_MODEL, on_delete=models.CASCADE, related_name="+")
    primitive = PrimitiveField()
    op = models.CharField(max_length=8, choices=Op.choices)
    amount = models.BigIntegerField()
    delta = models.BigIntegerField()
    level_after = models.BigIntegerField()
    occurred_at = models.DateTimeField()
    idempotency_key = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="billing_gauge_key_unique",
            ),
            models.CheckConstraint(
                condition=Q(level_after__gte=0, amount__gte=0), name="billing_gauge_event_valid"
            ),
        ]
        indexes = [
            models.Index(
                fields=["customer", "primitive", "occurred_at"], name="billing_gauge_event_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.primitive} {self.op} {self.amount}"
