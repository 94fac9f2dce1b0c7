"""A customer's subscription, its billing periods and its seats."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from .catalog import Plan, TimeStamped
from .customers import CUSTOMER_MODEL


class SubscriptionStatus(models.TextChoices):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"
    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    PAUSED = "paused"


ENDED_STATUSES = frozenset({SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED})


class Subscription(TimeStamped):
    """The customer's plan and Stripe state. One per customer: a customer who cancels and
    subscribes again keeps the row, and gets a new anchor and a new billing period."""

    customer = models.OneToOneField(
        CUSTOMER_MODEL, on_delete=models.CASCADE, related_name="billing_subscription"
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(
        max_length=24, choices=SubscriptionStatus.choices, default=SubscriptionStatus.ACTIVE
    )
    status_changed_at = models.DateTimeField(
        help_text=_("When the status last changed: past_due grace counts from here.")
    )
    started_at = models.DateTimeField(help_text=_("When this subscription began"))
    billing_cycle_anchor = models.DateTimeField(
        help_text=_(
            "Quota windows are counted from here: Stripe's billing_cycle_anchor, else the "
            "start. It does not move with renewals."
        )
    )
    ended_at = models.DateTimeField(null=True, blank=True)
    cancel_at_period_end = models.BooleanField(default=False)
    seats = models.PositiveIntegerField(default=1)
    stripe_customer_id = models.CharField(max_length=255, blank=True, db_index=True)
    stripe_subscription_id = models.CharField(max_length=255, blank=True, db_index=True)
    usage_reset_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text=_("A plan change reset usage here: the quota window restarts at this time."),
    )
    # Kept once the trial is over (Stripe keeps them too): a customer gets one trial.
    trial_start = models.DateTimeField(null=True, blank=True)
    trial_end = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=SubscriptionStatus.values),
                name="billing_subscription_status_valid",
            ),
            models.CheckConstraint(condition=Q(seats__gte=1), name="billing_subscription_seats"),
        ]

    def __str__(self) -> str:
        return f"{self.customer} on {self.plan} ({self.status})"

    @property
    def ended(self) -> bool:
        return self.status in ENDED_STATUSES

    def in_trial(self, instant: datetime) -> bool:
        """Whether ``instant`` falls inside the subscription's trial."""
        start, end = self.trial_start, self.trial_end
        return start is not None and end is not None and start <= instant < end


class BillingPeriod(models.Model):
    """One period of one subscription, as a stored fact: cycles, usage records and charges
    follow these rows and never recompute them. Written by the subscription service only.
    """

    class Source(models.TextChoices):
        STRIPE = "stripe", _("Stripe's period")
        OPERATOR = "operator", _("Set by the operator")
        CADENCE = "cadence", _("Predicted from the plan's billing cadence")

    class EndReason(models.TextChoices):
        NONE = "", _("Ran its course")
        PLAN_CHANGE = "plan_change", _("Plan changed")
        CANCELLATION = "cancellation", _("Subscription ended")

    customer = models.ForeignKey(CUSTOMER_MODEL, on_delete=models.CASCADE, related_name="+")
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="periods")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    start = models.DateTimeField()
    end = models.DateTimeField()
    source = models.CharField(max_length=8, choices=Source.choices)
    end_reason = models.CharField(max_length=12, choices=EndReason.choices, blank=True)

    class Meta:
        ordering = ["-start"]
        constraints = [
            models.UniqueConstraint(fields=["customer", "start"], name="billing_period_start"),
            models.CheckConstraint(condition=Q(end__gt=F("start")), name="billing_period_order"),
        ]
        indexes = [models.Index(fields=["end"], name="billing_period_end_idx")]

    def __str__(self) -> str:
        return f"{self.customer} {self.start:%Y-%m-%d %H:%M}..{self.end:%Y-%m-%d %H:%M}"


class Seat(models.Model):
    """A grantee (a user) holding one of a subscription's seats."""

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="seat_set"
    )
    grantee = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="billing_seats"
    )
    assigned_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["assigned_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "grantee"], name="billing_seat_unique")
        ]

    def __str__(self) -> str:
        return f"{self.grantee} on {self.subscription_id}"
