from __future__ import annotations

from typing import Any

import isodate
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework_api_key.crypto import KeyGenerator
from rest_framework_api_key.models import AbstractAPIKey, BaseAPIKeyManager

from .periods import PERIODS

validate_primitive = RegexValidator(
    r"^[a-z0-9][a-z0-9._-]*\Z",
    _("A primitive is a slug of lowercase letters, digits, '.', '_' or '-', e.g. 'email.send'."),
)


def validate_iso_duration(value: str) -> None:
    try:
        duration = isodate.parse_duration(value)
    except (isodate.ISO8601Error, ValueError, TypeError):
        raise ValidationError(
            _("'%(value)s' is not an ISO 8601 duration such as P1M or P1Y."),
            params={"value": value},
        ) from None
    # Months and years are not a number of seconds: isodate keeps them apart.
    calendar_part = getattr(duration, "years", 0) * 12 + getattr(duration, "months", 0)
    seconds = duration.tdelta if isinstance(duration, isodate.Duration) else duration
    if calendar_part < 0 or seconds.total_seconds() < 0 or not (calendar_part or seconds):
        raise ValidationError(_("A billing cadence must be a positive duration."))


class PrimitiveField(models.CharField):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("validators", [validate_primitive])
        super().__init__(*args, **kwargs)


class TimeStamped(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class AccountKit(TimeStamped):
    """A policy template: the primitives a tenant may use at all, and at what rate."""

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class KitPrimitive(models.Model):
    kit = models.ForeignKey(AccountKit, on_delete=models.CASCADE, related_name="primitives")
    primitive = PrimitiveField()
    rate_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text=_("Calls per minute; empty means no rate limit.")
    )

    class Meta:
        ordering = ["primitive"]
        constraints = [
            models.UniqueConstraint(
                fields=["kit", "primitive"], name="billing_kit_primitive_unique"
            )
        ]

    def __str__(self) -> str:
        return self.primitive


class Period(models.TextChoices):
    DAY = "day", _("day")
    WEEK = "week", _("week")
    MONTH = "month", _("month")
    YEAR = "year", _("year")


assert tuple(Period.values) == PERIODS


class Plan(TimeStamped):
    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    account_kit = models.ForeignKey(
        AccountKit, on_delete=models.PROTECT, null=True, blank=True, related_name="plans"
    )
    stripe_price_id = models.CharField(max_length=255, blank=True)
    period = models.CharField(
        max_length=8, choices=Period.choices, default=Period.MONTH, help_text=_("Quota window")
    )
    billing_cadence = models.CharField(
        max_length=32,
        default="P1M",
        validators=[validate_iso_duration],
        help_text=_("ISO 8601 duration between invoices: P1M, P3M, P1Y, ..."),
    )
    currency = models.CharField(max_length=3, default="usd")
    active = models.BooleanField(default=True)
    stripe_meter_event = models.CharField(
        max_length=100,
        blank=True,
        help_text=_("A Stripe Billing meter's event name: overage is sent as meter events"),
    )

    class Meta:
        ordering = ["key"]
        constraints = [
            models.UniqueConstraint(
                fields=["stripe_price_id"],
                condition=~Q(stripe_price_id=""),
                name="billing_plan_stripe_price_unique",
            ),
            models.CheckConstraint(
                condition=Q(period__in=PERIODS), name="billing_plan_period_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.key


class PlanQuota(models.Model):
    """How much of one primitive a plan allows per quota window. No row: unlimited."""

    class Overage(models.TextChoices):
        BLOCK = "block", _("Block: a hard limit")
        BILL = "bill", _("Bill: calls go on, the excess is billed")

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="quotas")
    primitive = PrimitiveField()
    limit = models.PositiveBigIntegerField()
    overage = models.CharField(max_length=5, choices=Overage.choices, default=Overage.BLOCK)
    overage_unit_price = models.DecimalField(
        max_digits=24,
        decimal_places=12,
        null=True,
        blank=True,
        help_text=_("Price of one unit over the quota, in the plan currency's minor units"),
    )

    class Meta:
        ordering = ["primitive"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "primitive"], name="billing_quota_unique"),
            models.CheckConstraint(
                condition=Q(overage="block", overage_unit_price__isnull=True)
                | Q(overage="bill", overage_unit_price__gte=0),
                name="billing_quota_overage_priced",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.primitive}: {self.limit}"


class SubscriptionStatus(models.TextChoices):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"
    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    PAUSED = "paused"


class Subscription(TimeStamped):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="billing_subscription"
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(
        max_length=24, choices=SubscriptionStatus.choices, default=SubscriptionStatus.ACTIVE
    )
    status_changed_at = models.DateTimeField(
        help_text=_("When the status last changed: past_due grace counts from here.")
    )
    stripe_customer_id = models.CharField(max_length=255, blank=True, db_index=True)
    stripe_subscription_id = models.CharField(max_length=255, blank=True, db_index=True)
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    cancel_at_period_end = models.BooleanField(default=False)
    usage_reset_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text=_("A plan change reset usage here: the quota window restarts at this time."),
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=SubscriptionStatus.values),
                name="billing_subscription_status_valid",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} on {self.plan} ({self.status})"

    def clean(self) -> None:
        start, end = self.current_period_start, self.current_period_end
        if start and end and end <= start:
            raise ValidationError({"current_period_end": _("The period must end after it starts.")})


class UsageRecord(TimeStamped):
    """One billing cycle of a tenant: its plan, and per primitive the usage, quota and
    overage. ``current`` while the cycle is open; ``recorded`` once closed, or ``final``
    when the subscription was cancelled during it. A closed record never changes again."""

    class Status(models.TextChoices):
        CURRENT = "current"
        RECORDED = "recorded"
        FINAL = "final"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="billing_records"
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    cycle_start = models.DateTimeField()
    cycle_end = models.DateTimeField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.CURRENT)
    # {primitive: {"used": n, "quota": n | None, "overage": n}}, written when it closes.
    usage = models.JSONField(default=dict, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-cycle_start"]
        constraints = [
            models.UniqueConstraint(fields=["user", "cycle_start"], name="billing_record_cycle"),
            models.UniqueConstraint(
                fields=["user"], condition=Q(status="current"), name="billing_record_one_open"
            ),
            models.CheckConstraint(
                condition=Q(cycle_end__gt=F("cycle_start")), name="billing_record_cycle_order"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.cycle_start:%Y-%m-%d}..{self.cycle_end:%Y-%m-%d} ({self.status})"


class UsageAlert(models.Model):
    """A usage threshold a tenant crossed in a quota window: the row makes the alert once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    primitive = PrimitiveField()
    window_start = models.DateTimeField()
    threshold = models.DecimalField(max_digits=6, decimal_places=4)
    usage = models.BigIntegerField()
    limit = models.BigIntegerField()
    crossed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "primitive", "window_start", "threshold"],
                name="billing_alert_once",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.primitive} {self.threshold:%}"


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
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    answer = models.JSONField(null=True, blank=True, help_text=_("What the receiver answered"))

    class Meta:
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="billing_outbox_due")]

    def __str__(self) -> str:
        return f"{self.kind} {self.key} ({self.state})"


class StripeSyncProblem(TimeStamped):
    """A Stripe subscription that could not be applied to a tenant: which one, why, and what
    to fix. The webhook still succeeds (Stripe would retry forever); the row goes when a
    later sync of the subscription applies."""

    class Reason(models.TextChoices):
        NO_TENANT = "no_tenant", _("No tenant")
        NO_PLAN = "no_plan", _("No plan for its price")

    stripe_subscription_id = models.CharField(max_length=255, unique=True)
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    reason = models.CharField(max_length=16, choices=Reason.choices)
    detail = models.TextField()
    stripe_event_id = models.CharField(
        max_length=255, blank=True, help_text=_("The event that last ran into it")
    )

    def __str__(self) -> str:
        return f"{self.stripe_subscription_id}: {self.get_reason_display()}"


class KitAssignment(models.Model):
    """The Account Kit of a tenant: at most one, set with its subscription or directly."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="billing_kit"
    )
    kit = models.ForeignKey(AccountKit, on_delete=models.PROTECT, related_name="assignments")
    assigned_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.user}: {self.kit}"


class UsageCounter(models.Model):
    """Running total of one tenant, one primitive, one quota window.

    A row belongs to one window, so a new window starts from zero with no reset job. The
    hot path reserves with one conditional UPDATE on the unique index below.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    primitive = PrimitiveField()
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    used = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "primitive", "window_start"], name="billing_counter_window_unique"
            ),
            models.CheckConstraint(condition=Q(used__gte=0), name="billing_counter_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.primitive} {self.window_start:%Y-%m-%d}: {self.used}"


class UsageEvent(models.Model):
    """One recorded use. Append-only: the counters are derived from these."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    primitive = PrimitiveField()
    quantity = models.BigIntegerField(validators=[MinValueValidator(1)])
    occurred_at = models.DateTimeField(help_text=_("When the use happened"))
    recorded_at = models.DateTimeField(auto_now_add=True)
    window_start = models.DateTimeField(help_text=_("Start of the quota window it counts in"))
    idempotency_key = models.CharField(max_length=255, blank=True)
    # Hash of what the idempotency key was first sent with: a different body is a conflict.
    fingerprint = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-occurred_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="billing_event_idempotency_unique",
            ),
            models.CheckConstraint(condition=Q(quantity__gte=1), name="billing_event_quantity"),
        ]
        indexes = [
            models.Index(
                fields=["user", "primitive", "window_start"], name="billing_event_window_idx"
            ),
            models.Index(fields=["occurred_at"], name="billing_event_occurred_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.primitive} x{self.quantity}"


class PrefixedKeyGenerator(KeyGenerator):
    """Keys look like ``sk_<prefix>.<secret>``: recognisable in logs and by secret scanners."""

    def __init__(self, scheme: str) -> None:
        super().__init__()
        self.scheme = scheme

    def generate(self) -> tuple[str, str, str]:
        prefix = self.get_prefix()
        key = f"{self.scheme}{prefix}.{self.get_secret_key()}"
        return key, prefix, self.hash(key)


class PrefixedKeyManager(BaseAPIKeyManager):
    key_generator: PrefixedKeyGenerator

    def get_from_key(self, key: str) -> AbstractAPIKey:
        scheme = self.key_generator.scheme
        if not key.startswith(scheme):
            raise self.model.DoesNotExist("Not a key of this kind.")
        prefix = key[len(scheme) :].partition(".")[0]
        api_key = self.get_usable_keys().get(prefix=prefix)
        if not api_key.is_valid(key) or api_key.has_expired:
            raise self.model.DoesNotExist("Key is not valid.")
        return api_key


class OperatorKeyManager(PrefixedKeyManager):
    key_generator = PrefixedKeyGenerator("sk_")


class TenantTokenManager(PrefixedKeyManager):
    key_generator = PrefixedKeyGenerator("tk_")


class OperatorKey(AbstractAPIKey):
    """A secret key of the operator, for the ``/v1/`` API. Stored hashed (SHA-512)."""

    objects = OperatorKeyManager()

    class Meta(AbstractAPIKey.Meta):
        verbose_name = _("operator key")
        verbose_name_plural = _("operator keys")


class TenantToken(AbstractAPIKey):
    """A tenant's API token, for metered calls and ``/billing/``. Stored hashed."""

    objects = TenantTokenManager()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="billing_tokens"
    )

    class Meta(AbstractAPIKey.Meta):
        verbose_name = _("tenant token")
        verbose_name_plural = _("tenant tokens")
