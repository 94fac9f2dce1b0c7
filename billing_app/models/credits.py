"""Prepaid credits: grants feed a customer's balance, metered calls draw on it.

Every change of a balance is an entry (a grant becoming effective, a draw, a refund, an
expiry), so anyone can rebuild a balance from its entries. Written by
``metering.credits`` and, for draws, by the reservation statement of
``metering.ledger``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from .catalog import Plan, PrimitiveField, TimeStamped
from .customers import CUSTOMER_MODEL


class PlanCredits(models.Model):
    """A plan's credits: granted at the start of every billing period and expiring at
    its end, when up to ``rollover_cap`` of what is left rolls over for ``rollover_days``."""

    plan = models.OneToOneField(Plan, on_delete=models.CASCADE, related_name="credits")
    per_period = models.PositiveBigIntegerField(default=0)
    rollover_cap = models.PositiveBigIntegerField(default=0)
    rollover_days = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.plan}: {self.per_period} credits a period"


class PlanCreditCost(models.Model):
    """What one unit of a primitive costs in credits on a plan ("1 seo = 2 credits")."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="credit_costs")
    primitive = PrimitiveField()
    credits = models.PositiveBigIntegerField()

    class Meta:
        ordering = ["primitive"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "primitive"], name="billing_credit_cost_unique")
        ]

    def __str__(self) -> str:
        return f"1 {self.primitive} = {self.credits} credits"


class CreditPack(TimeStamped):
    """A one-time purchase of credits: a Stripe price (one-time, not recurring)."""

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    credits = models.PositiveBigIntegerField()
    stripe_price_id = models.CharField(max_length=255, blank=True)
    expires_after_days = models.PositiveIntegerField(null=True, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class CreditGrant(TimeStamped):
    """Credits given to a customer: by its plan each period, a purchase, a promotion, an
    operator (with a reason), or rolled over from an expiring grant. Draws take from the
    grants in ``priority`` order (lower first), then soonest expiry."""

    class Source(models.TextChoices):
        PLAN = "plan", _("Plan, each billing period")
        PURCHASE = "purchase", _("Purchase (a credit pack)")
        PROMOTION = "promotion", _("Promotion")
        MANUAL = "manual", _("Granted by an operator")
        ROLLOVER = "rollover", _("Rolled over from an expired grant")

    class State(models.TextChoices):
        PENDING = "pending", _("Not effective yet")
        ACTIVE = "active"
        EXPIRED = "expired"

    customer = models.ForeignKey(CUSTOMER_MODEL, on_delete=models.CASCADE, related_name="+")
    amount = models.PositiveBigIntegerField()
    remaining = models.BigIntegerField(default=0)
    priority = models.PositiveIntegerField(default=100)
    effective_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    rollover_cap = models.PositiveBigIntegerField(default=0)
    rollover_days = models.PositiveIntegerField(null=True, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    # What made it, for sources that must grant once: a period, a Checkout Session, ...
    source_ref = models.CharField(max_length=255, blank=True)
    reason = models.TextField(blank=True)
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)

    class Meta:
        ordering = ["priority", "expires_at", "effective_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "source_ref"],
                condition=~Q(source_ref=""),
                name="billing_credit_grant_once",
            ),
            models.CheckConstraint(
                condition=Q(expires_at__isnull=True) | Q(expires_at__gt=models.F("effective_at")),
                name="billing_credit_grant_order",
            ),
        ]
        indexes = [models.Index(fields=["customer", "state"], name="billing_grant_state_idx")]

    def __str__(self) -> str:
        return f"{self.amount} credits for {self.customer_id} ({self.source})"


class CreditBalance(models.Model):
    """A customer's credits now: the sum of its entries. ``valid_until`` is the next
    instant a grant starts or expires; a draw after it first brings the balance up to
    date. Entries up to ``allocated_through`` are allocated to grants."""

    customer = models.OneToOneField(
        CUSTOMER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    balance = models.BigIntegerField(default=0)
    valid_until = models.DateTimeField(null=True, blank=True)
    allocated_through = models.BigIntegerField(default=0)
    # What the active grants gave, and since when: low-balance alerts count from these.
    granted = models.BigIntegerField(default=0)
    granted_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(balance__gte=0), name="billing_credit_balance")
        ]

    def __str__(self) -> str:
        return f"{self.customer_id}: {self.balance} credits"


class CreditEntry(models.Model):
    """One change of a balance. Append-only: a failed call's draw is answered by a refund
    entry, never deleted."""

    class Kind(models.TextChoices):
        GRANT = "grant"
        DRAW = "draw"
        REFUND = "refund", _("Refund of a failed call's draw")
        EXPIRY = "expiry"

    customer = models.ForeignKey(CUSTOMER_MODEL, on_delete=models.CASCADE, related_name="+")
    delta = models.BigIntegerField()
    kind = models.CharField(max_length=6, choices=Kind.choices)
    grant = models.ForeignKey(
        CreditGrant, on_delete=models.PROTECT, null=True, blank=True, related_name="entries"
    )
    event_id = models.BigIntegerField(null=True, blank=True)
    primitive = models.CharField(max_length=64, blank=True)
    at = models.DateTimeField()

    class Meta:
        ordering = ["-pk"]
        indexes = [
            models.Index(fields=["customer", "id"], name="billing_credit_entry_idx"),
            models.Index(fields=["event_id"], name="billing_credit_event_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.kind} {self.delta:+d}"


class CreditAutoTopUp(models.Model):
    """Buy ``pack`` off-session when a draw leaves the balance below ``below``, at most
    ``monthly_cap`` times a calendar month."""

    customer = models.OneToOneField(CUSTOMER_MODEL, on_delete=models.CASCADE, related_name="+")
    pack = models.ForeignKey(CreditPack, on_delete=models.PROTECT, related_name="+")
    below = models.PositiveBigIntegerField()
    monthly_cap = models.PositiveIntegerField(default=1)
    active = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"{self.customer_id}: {self.pack} below {self.below}"
