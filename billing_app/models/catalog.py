"""What can be sold: Account Kits, plans, their quotas and features."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from ..periods import PERIODS, validate_cadence

validate_primitive = RegexValidator(
    r"^[a-z0-9][a-z0-9._-]*\Z",
    _("A primitive is a slug of lowercase letters, digits, '.', '_' or '-', e.g. 'email.send'."),
)


class PrimitiveField(models.CharField):
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("validators", [validate_primitive])
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


class TimeStamped(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class AccountKit(TimeStamped):
    """A policy template: the primitives a customer may use at all, and at what rate."""

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


class Product(TimeStamped):
    """What is sold, priced by several plans (tiers, customer-specific deals)."""

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class TrialEnd(models.TextChoices):
    CONVERT = "convert", _("Convert: the subscription goes on, active")
    FALLBACK = "fallback", _("Fall back: move to the fallback plan (or the one named)")
    STOP = "stop", _("Stop: the subscription is canceled")


class Plan(TimeStamped):
    """A plan: an Account Kit, a Stripe price, quotas per window, features, a cadence,
    prices per primitive, a trial."""

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    product = models.ForeignKey(
        Product, on_delete=models.PROTECT, null=True, blank=True, related_name="plans"
    )
    invoice_display_name = models.CharField(
        max_length=200,
        blank=True,
        help_text=_("What customers see on invoices and the billing page; empty: the name"),
    )
    account_kit = models.ForeignKey(
        AccountKit, on_delete=models.PROTECT, null=True, blank=True, related_name="plans"
    )
    stripe_price_id = models.CharField(max_length=255, blank=True)
    period = models.CharField(
        max_length=8,
        choices=Period.choices,
        default=Period.MONTH,
        help_text=_("Quota window, counted from the subscription's billing cycle anchor"),
    )
    billing_cadence = models.CharField(
        max_length=32,
        default="P1M",
        validators=[validate_cadence],
        help_text=_("ISO 8601 duration between invoices: P1M, P3M, P1Y, P7D, ..."),
    )
    currency = models.CharField(max_length=3, default="usd")
    active = models.BooleanField(default=True)
    stripe_meter_event = models.CharField(
        max_length=100,
        blank=True,
        help_text=_("A Stripe Billing meter's event name: overage is sent as meter events"),
    )
    # Amounts are in the currency's minor units (cents), with up to 12 decimals as Stripe's
    # unit_amount_decimal takes them.
    minimum_commitment = models.DecimalField(
        max_digits=24,
        decimal_places=12,
        null=True,
        blank=True,
        help_text=_(
            "Least the prices charge per billing period, in minor units: a period that "
            "charges less is topped up to it"
        ),
    )
    trial_days = models.PositiveIntegerField(
        default=0, help_text=_("Length of a new customer's trial, in days; 0: no trial")
    )
    trial_end_action = models.CharField(
        max_length=8, choices=TrialEnd.choices, default=TrialEnd.CONVERT
    )
    trial_fallback_plan = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text=_("Where a trial that falls back goes; empty: BILLING_FALLBACK_PLAN"),
    )

    class Meta:
        ordering = ["key"]
        # Explicit privilege for the operator API through a session (staff is not enough).
        permissions = [("operate", "Can use the billing operator API")]
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

    @property
    def display_name(self) -> str:
        return self.invoice_display_name or self.name


class PlanQuota(models.Model):
    """How much of one primitive a plan allows. A counter's limit is per quota window; a
    gauge's is on its level (storage in bytes, seats in use), which has no window. No
    row: unlimited."""

    class Kind(models.TextChoices):
        COUNTER = "counter", _("Counter: usage per quota window")
        GAUGE = "gauge", _("Gauge: a level that goes up and down")

    class Overage(models.TextChoices):
        BLOCK = "block", _("Block: a hard limit")
        BILL = "bill", _("Bill: calls go on, the excess is billed")

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="quotas")
    primitive = PrimitiveField()
    kind = models.CharField(max_length=7, choices=Kind.choices, default=Kind.COUNTER)
    limit = models.PositiveBigIntegerField()
    per_seat = models.BooleanField(
        default=False, help_text=_("The limit is per seat: the customer gets limit x seats.")
    )
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
                condition=Q(kind__in=["counter", "gauge"]), name="billing_quota_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(overage="block", overage_unit_price__isnull=True)
                | Q(overage="bill", overage_unit_price__gte=0),
                name="billing_quota_overage_priced",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.primitive}: {self.limit}"


class PlanFeature(models.Model):
    """A boolean capability a plan grants (``sso``, ``csv-export``): checked, not metered."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="features")
    feature = models.SlugField(max_length=64)

    class Meta:
        ordering = ["feature"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "feature"], name="billing_feature_unique")
        ]

    def __str__(self) -> str:
        return self.feature


class PlanPrice(models.Model):
    """How a plan charges for one primitive's usage in each billing period, in the plan's
    currency's minor units. ``tiers`` (graduated, volume) are
    ``[{"up_to": n | None, "unit_amount": "0.5", "flat_amount": "100" | None}]``, ascending,
    the last unbounded. The included quantity is deducted before pricing; in advance, it
    is charged when the period opens. ``billing_app.cycles.pricing`` computes the charges."""

    class PriceModel(models.TextChoices):
        PER_UNIT = "per_unit", _("Per unit")
        PACKAGE = "package", _("Package: per started package of N units")
        GRADUATED = "graduated", _("Graduated: each tier prices the units within it")
        VOLUME = "volume", _("Volume: the tier reached prices every unit")

    class PaymentTerms(models.TextChoices):
        IN_ARREARS = "in_arrears", _("In arrears: usage is charged when the period ends")
        IN_ADVANCE = "in_advance", _("In advance: the included quantity is charged up front")

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="prices")
    primitive = PrimitiveField()
    model = models.CharField(max_length=9, choices=PriceModel.choices, default=PriceModel.PER_UNIT)
    unit_amount = models.DecimalField(
        max_digits=24,
        decimal_places=12,
        null=True,
        blank=True,
        help_text=_("Per unit, or per package; empty for tiers"),
    )
    package_size = models.PositiveBigIntegerField(null=True, blank=True)
    tiers = models.JSONField(default=list, blank=True)
    included_quantity = models.PositiveBigIntegerField(default=0)
    payment_terms = models.CharField(
        max_length=10, choices=PaymentTerms.choices, default=PaymentTerms.IN_ARREARS
    )

    class Meta:
        ordering = ["primitive"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "primitive"], name="billing_price_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.primitive}: {self.model}"
