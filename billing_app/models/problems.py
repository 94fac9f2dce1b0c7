"""Things the app could not do on its own, kept for an operator to fix in the admin."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from .catalog import TimeStamped


class Problem(TimeStamped):
    """What went wrong, with what, and what to do about it. One row per subject, updated
    while the problem lasts and deleted when a later attempt succeeds."""

    class Kind(models.TextChoices):
        STRIPE_NO_CUSTOMER = "stripe_no_customer", _("Stripe: no customer")
        STRIPE_NO_PLAN = "stripe_no_plan", _("Stripe: no plan for its price")
        STRIPE_NOT_APPLIED = "stripe_not_applied", _("Stripe: changed there, not here yet")
        STRIPE_TWO_LIVE = "stripe_two_live", _("Stripe: two live subscriptions")
        CYCLE_CLOSE = "cycle_close", _("A billing period could not be closed")

    kind = models.CharField(max_length=24, choices=Kind.choices)
    # "stripe:sub_123", "period:42": what the problem is about, and what a retry retries.
    subject = models.CharField(max_length=255, unique=True)
    detail = models.TextField()
    stripe_event_id = models.CharField(
        max_length=255, blank=True, help_text=_("The Stripe event that last ran into it")
    )
    attempts = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return f"{self.subject}: {self.get_kind_display()}"
