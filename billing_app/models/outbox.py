"""Messages to other systems, decided in a transaction and delivered after it."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .catalog import TimeStamped


class OutboxMessage(TimeStamped):
    """Something to tell another system, written in the transaction that decided it and
    delivered afterwards with retries. ``key`` is deterministic and sent as the
    idempotency key, so a retry after a crash never acts twice."""

    class Kind(models.TextChoices):
        STRIPE_INVOICE_ITEM = "stripe_invoice_item"
        STRIPE_METER_EVENT = "stripe_meter_event"
        WEBHOOK = "webhook"

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed", _("Failed: retries used up")

    kind = models.CharField(max_length=24, choices=Kind.choices)
    key = models.CharField(max_length=255, unique=True)
    payload = models.JSONField()
    state = models.CharField(max_length=9, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # Also the lease: a worker that claims a message moves it past the send's timeout.
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    answer = models.JSONField(null=True, blank=True, help_text=_("What the receiver answered"))

    class Meta:
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="billing_outbox_due")]

    def __str__(self) -> str:
        return f"{self.kind} {self.key} ({self.state})"
