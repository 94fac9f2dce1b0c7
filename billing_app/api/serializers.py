"""Input and output shapes of the API, in the camelCase the contracts use.

Input serializers only parse; views hand ``snake_case(serializer.validated_data)`` to a
service, whose errors name the same fields.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from ..catalog.selectors import price_json
from ..conf import billing_settings, customer_id_json
from ..metering.services import BATCH_LIMIT
from ..models import BillingPeriod, PlanPrice, SubscriptionStatus, TrialEnd
from ..periods import PERIODS, interval_name
from ..validation import MAX_BIGINT
from .errors import camel_case, snake_case

__all__ = ["camel_case", "snake_case"]

SLUG = r"^[a-z0-9][a-z0-9._-]*\Z"
# The same, as JSON Schema reads patterns (ECMA 262: "$" ends the text).
SLUG_PATTERN = SLUG.replace("\\Z", "$")
CUSTOMER_ID_SCHEMA = {"oneOf": [{"type": "integer"}, {"type": "string"}]}


@extend_schema_field(CUSTOMER_ID_SCHEMA)
class CustomerIdField(serializers.Field):
    """A customer's key: a JSON number for integer keys, a string for any other."""

    def to_representation(self, value: Any) -> int | str:
        return customer_id_json(value)


@extend_schema_field(CUSTOMER_ID_SCHEMA)
class CustomerIdInputField(serializers.JSONField):
    """A customer's key as a client sends it: a number, or a string key."""


primitive_field = serializers.RegexField(
    SLUG,
    max_length=64,
    error_messages={"invalid": "A primitive is a slug such as 'seo' or 'email.send'."},
)


class PrimitiveDictField(serializers.DictField):
    """An object keyed by primitive slugs (checked by the service, which names the field)."""

    key_pattern = SLUG_PATTERN


def _primitive_dict(child: serializers.Field) -> serializers.DictField:
    return PrimitiveDictField(child=child, required=False)


# Account kits


class KitPrimitiveSerializer(serializers.Serializer):
    ratePerMinute = serializers.IntegerField(
        min_value=0, max_value=2**31 - 1, allow_null=True, required=False
    )


class AccountKitInputSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200)
    primitives = PrimitiveDictField(child=KitPrimitiveSerializer(), required=False)

    def validate_primitives(self, value: dict[str, dict[str, Any]]) -> dict[str, int | None]:
        return {slug: options.get("ratePerMinute") for slug, options in value.items()}


class AccountKitSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    key = serializers.CharField()
    name = serializers.CharField()
    primitives = serializers.SerializerMethodField()
    createdAt = serializers.DateTimeField(source="created_at")
    updatedAt = serializers.DateTimeField(source="updated_at")

    def get_primitives(self, kit: Any) -> dict[str, dict[str, int | None]]:
        return {p.primitive: {"ratePerMinute": p.rate_per_minute} for p in kit.primitives.all()}


def flat_errors(errors: Any, prefix: str = "") -> dict[str, Any]:
    """DRF's nested errors (``{"prices": [{}, {"tiers": [{"upTo": [...]}]}]}``) as paths to
    the field, ``{"prices.1.tiers.0.upTo": [...]}``, as the services name them."""
    if isinstance(errors, dict):
        flat: dict[str, Any] = {}
        for key, value in errors.items():
            if key == "non_field_errors" and prefix:
                path = prefix  # about the list or object itself
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            flat.update(flat_errors(value, path))
        return flat
    if isinstance(errors, list) and any(isinstance(item, (dict, list)) for item in errors):
        flat = {}
        for index, value in enumerate(errors):
            flat.update(flat_errors(value, f"{prefix}.{index}"))
        return flat
    return {prefix: errors} if errors else {}


# Products


class ProductInputSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200)


class ProductSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    key = serializers.CharField()
    name = serializers.CharField()
    createdAt = serializers.DateTimeField(source="created_at")
    updatedAt = serializers.DateTimeField(source="updated_at")


# Plans


class PlanCreditsSerializer(serializers.Serializer):
    perPeriod = serializers.IntegerField(min_value=0, max_value=2**63 - 1, default=0)
    rolloverCap = serializers.IntegerField(min_value=0, max_value=2**63 - 1, default=0)
    rolloverDays = serializers.IntegerField(
        min_value=1, max_value=3660, required=False, allow_null=True, default=None
    )

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        return snake_case(dict(super().to_internal_value(data)))


def _amount_field(**kwargs: Any) -> serializers.DecimalField:
    """An amount in minor units, with up to 12 decimals ("0.2" = a fifth of a cent)."""
    return serializers.DecimalField(max_digits=24, decimal_places=12, min_value=0, **kwargs)


class TierSerializer(serializers.Serializer):
    upTo = serializers.IntegerField(
        source="up_to",
        min_value=1,
        max_value=MAX_BIGINT,
        allow_null=True,
        required=False,
        help_text="The tier's last unit; null for the last tier, which is unbounded.",
    )
    unitAmount = _amount_field(source="unit_amount")
    flatAmount = _amount_field(source="flat_amount", allow_null=True, required=False)


class PriceSerializer(serializers.Serializer):
    primitive = primitive_field
    model = serializers.ChoiceField(
        choices=PlanPrice.PriceModel.values, default=PlanPrice.PriceModel.PER_UNIT
    )
    unitAmount = _amount_field(source="unit_amount", allow_null=True, required=False)
    packageSize = serializers.IntegerField(
        source="package_size", min_value=1, max_value=MAX_BIGINT, allow_null=True, required=False
    )
    tiers: serializers.ListSerializer[Any] = serializers.ListSerializer(
        child=TierSerializer(), required=False, max_length=100
    )
    includedQuantity = serializers.IntegerField(
        source="included_quantity", min_value=0, max_value=MAX_BIGINT, default=0
    )
    paymentTerms = serializers.ChoiceField(
        source="payment_terms",
        choices=PlanPrice.PaymentTerms.values,
        default=PlanPrice.PaymentTerms.IN_ARREARS,
    )


class PlanInputSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200)
    productId = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=64
    )
    invoiceDisplayName = serializers.CharField(required=False, allow_blank=True, max_length=200)
    accountKitId = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=64
    )
    stripePriceId = serializers.CharField(required=False, allow_blank=True, max_length=255)
    quotas = _primitive_dict(serializers.IntegerField(min_value=0, max_value=2**63 - 1))
    # slug -> limit on the gauge's level (storage in bytes): no window
    gauges = _primitive_dict(serializers.IntegerField(min_value=0, max_value=2**63 - 1))
    perSeat = serializers.ListField(child=primitive_field, required=False, max_length=1000)
    features = serializers.ListField(
        child=serializers.SlugField(max_length=64), required=False, max_length=1000
    )
    period = serializers.ChoiceField(choices=PERIODS, required=False)
    billingCadence = serializers.CharField(required=False, max_length=32)
    currency = serializers.CharField(required=False, min_length=3, max_length=3)
    active = serializers.BooleanField(required=False)
    # slug -> unit price past the quota, in the currency's minor units ("0.5" = half a cent)
    overage = _primitive_dict(
        serializers.DecimalField(max_digits=24, decimal_places=12, min_value=0)
    )
    stripeMeterEvent = serializers.CharField(required=False, allow_blank=True, max_length=100)
    # slug -> credits one unit costs; the plan's credits each billing period (null: none)
    creditCosts = _primitive_dict(serializers.IntegerField(min_value=1, max_value=2**63 - 1))
    credits = PlanCreditsSerializer(required=False, allow_null=True)
    prices: serializers.ListSerializer[Any] = serializers.ListSerializer(
        child=PriceSerializer(), required=False, max_length=1000
    )
    minimumCommitment = _amount_field(required=False, allow_null=True)
    # The most billed overage may cost per quota window, in minor units (null: no cap)
    overageSpendCap = _amount_field(required=False, allow_null=True)
    trialDays = serializers.IntegerField(required=False, min_value=0, max_value=730)
    trialEndAction = serializers.ChoiceField(choices=TrialEnd.values, required=False)
    trialFallbackPlan = serializers.SlugField(
        required=False, allow_null=True, allow_blank=True, max_length=64
    )


class PlanSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    key = serializers.CharField()
    name = serializers.CharField()
    productId = serializers.CharField(source="product.key", allow_null=True, default=None)
    invoiceDisplayName = serializers.CharField(
        source="display_name", help_text="What invoices show; the name unless set."
    )
    accountKitId = serializers.CharField(source="account_kit.key", allow_null=True, default=None)
    stripePriceId = serializers.CharField(source="stripe_price_id")
    quotas = serializers.SerializerMethodField()
    gauges = serializers.SerializerMethodField()
    perSeat = serializers.SerializerMethodField()
    features = serializers.SerializerMethodField()
    period = serializers.CharField()
    billingCadence = serializers.CharField(source="billing_cadence")
    billingInterval = serializers.SerializerMethodField(
        help_text="Deprecated: monthly, quarterly or yearly, from billingCadence."
    )
    currency = serializers.CharField()
    active = serializers.BooleanField()
    overage = serializers.SerializerMethodField()
    stripeMeterEvent = serializers.CharField(source="stripe_meter_event")
    prices = serializers.SerializerMethodField()
    minimumCommitment = serializers.DecimalField(
        source="minimum_commitment",
        max_digits=24,
        decimal_places=12,
        normalize_output=True,
        allow_null=True,
    )
    overageSpendCap = serializers.DecimalField(
        source="overage_spend_cap",
        max_digits=24,
        decimal_places=12,
        normalize_output=True,
        allow_null=True,
    )
    trialDays = serializers.IntegerField(source="trial_days")
    trialEndAction = serializers.CharField(source="trial_end_action")
    trialFallbackPlan = serializers.CharField(
        source="trial_fallback_plan.key", allow_null=True, default=None
    )
    createdAt = serializers.DateTimeField(source="created_at")
    updatedAt = serializers.DateTimeField(source="updated_at")

    def get_prices(self, plan: Any) -> list[dict[str, Any]]:
        return [price_json(price) for price in plan.prices.all()]

    def get_quotas(self, plan: Any) -> dict[str, int]:
        return {q.primitive: q.limit for q in plan.quotas.all() if q.kind == "counter"}

    def get_gauges(self, plan: Any) -> dict[str, int]:
        return {q.primitive: q.limit for q in plan.quotas.all() if q.kind == "gauge"}

    def get_perSeat(self, plan: Any) -> list[str]:
        return [quota.primitive for quota in plan.quotas.all() if quota.per_seat]

    def get_features(self, plan: Any) -> list[str]:
        return [feature.feature for feature in plan.features.all()]

    def get_billingInterval(self, plan: Any) -> str | None:
        return interval_name(plan.billing_cadence)

    creditCosts = serializers.SerializerMethodField()
    credits = serializers.SerializerMethodField()

    def get_creditCosts(self, plan: Any) -> dict[str, int]:
        return {cost.primitive: cost.credits for cost in plan.credit_costs.all()}

    def get_credits(self, plan: Any) -> dict[str, int | None] | None:
        config = getattr(plan, "credits", None)
        if config is None:
            return None
        return {
            "perPeriod": config.per_period,
            "rolloverCap": config.rollover_cap,
            "rolloverDays": config.rollover_days,
        }

    def get_overage(self, plan: Any) -> dict[str, str]:
        """The billed quotas' unit prices; a quota not listed blocks."""
        return {
            quota.primitive: f"{quota.overage_unit_price.normalize():f}"
            for quota in plan.quotas.all()
            if quota.overage == "bill"
        }


# Customers


class CustomerInputSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    name = serializers.CharField(max_length=200, required=False, default="")


class CustomerSerializer(serializers.Serializer):
    id = CustomerIdField(source="pk")
    email = serializers.SerializerMethodField()

    def get_email(self, customer: Any) -> str | None:
        return getattr(customer, "email", None)


class TokenInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=50, required=False, default="api")
    granteeId = serializers.CharField(max_length=255, required=False)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Shown once: only its hash is stored.")
    prefix = serializers.CharField()
    name = serializers.CharField()


# Subscriptions


class SubscriptionInputSerializer(serializers.Serializer):
    planKey = serializers.SlugField(max_length=64)
    status = serializers.ChoiceField(choices=SubscriptionStatus.values, required=False)
    stripeCustomerId = serializers.CharField(required=False, allow_blank=True, max_length=255)
    stripeSubscriptionId = serializers.CharField(required=False, allow_blank=True, max_length=255)
    currentPeriodStart = serializers.DateTimeField(required=False, allow_null=True)
    currentPeriodEnd = serializers.DateTimeField(required=False, allow_null=True)
    billingCycleAnchor = serializers.DateTimeField(required=False, allow_null=True)
    cancelAtPeriodEnd = serializers.BooleanField(required=False)
    seats = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False)
    trialStart = serializers.DateTimeField(required=False, allow_null=True)
    trialEnd = serializers.DateTimeField(required=False, allow_null=True)
    assignKit = serializers.BooleanField(default=True)


class TrialInputSerializer(serializers.Serializer):
    planKey = serializers.SlugField(max_length=64)
    trialEnd = serializers.DateTimeField(
        required=False, help_text="Default: the plan's trial length (trialDays) from now."
    )


def current_period(subscription: Any) -> BillingPeriod | None:
    now = timezone.now()
    for period in subscription.periods.all():
        if period.start <= now < period.end:
            return period
    return None


OPTIONAL_DATETIME = serializers.DateTimeField(allow_null=True)


def _current_bound(subscription: Any, bound: str) -> str | None:
    """The current billing period's start or end, as DRF renders a datetime."""
    period = current_period(subscription)
    return _datetime(getattr(period, bound) if period else None)


def _datetime(value: datetime | None) -> str | None:
    return None if value is None else serializers.DateTimeField().to_representation(value)


class SubscriptionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    customerId = CustomerIdField(source="customer_id")
    planKey = serializers.CharField(source="plan.key")
    status = serializers.CharField()
    seats = serializers.IntegerField()
    stripeCustomerId = serializers.CharField(source="stripe_customer_id")
    stripeSubscriptionId = serializers.CharField(source="stripe_subscription_id")
    currentPeriodStart = serializers.SerializerMethodField()
    currentPeriodEnd = serializers.SerializerMethodField()
    cancelAtPeriodEnd = serializers.BooleanField(source="cancel_at_period_end")
    billingCycleAnchor = serializers.DateTimeField(source="billing_cycle_anchor")
    startedAt = serializers.DateTimeField(source="started_at")
    endedAt = serializers.DateTimeField(source="ended_at", allow_null=True)
    trialStart = serializers.DateTimeField(source="trial_start", allow_null=True)
    trialEnd = serializers.DateTimeField(source="trial_end", allow_null=True)
    accountKitId = serializers.SerializerMethodField()
    statusChangedAt = serializers.DateTimeField(source="status_changed_at")
    createdAt = serializers.DateTimeField(source="created_at")
    updatedAt = serializers.DateTimeField(source="updated_at")

    @extend_schema_field(OPTIONAL_DATETIME)
    def get_currentPeriodStart(self, subscription: Any) -> str | None:
        return _current_bound(subscription, "start")

    @extend_schema_field(OPTIONAL_DATETIME)
    def get_currentPeriodEnd(self, subscription: Any) -> str | None:
        return _current_bound(subscription, "end")

    def get_accountKitId(self, subscription: Any) -> str | None:
        return self.context.get("kit_key")


class ChangePlanInputSerializer(serializers.Serializer):
    planKey = serializers.SlugField(max_length=64)


class CancelInputSerializer(serializers.Serializer):
    when = serializers.ChoiceField(choices=["end", "now"], default="end")


class CancelSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    cancelAt = serializers.DateTimeField(allow_null=True)


def cancel_answer(subscription: Any) -> dict[str, Any]:
    """``{success, cancelAt}``: when it ended, or when it will (the period's end)."""
    if subscription.ended:
        cancel_at = subscription.ended_at
    else:
        period = current_period(subscription)
        cancel_at = period.end if period else None
    return CancelSerializer({"success": True, "cancelAt": cancel_at}).data


class SeatOperationSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["add", "remove", "replace"])
    granteeId = serializers.CharField(max_length=255)
    newGranteeId = serializers.CharField(max_length=255, required=False)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if data["type"] == "replace" and not data.get("newGranteeId"):
            raise serializers.ValidationError({"newGranteeId": ["A replace needs newGranteeId."]})
        return data


class SeatSerializer(serializers.Serializer):
    granteeId = serializers.SerializerMethodField()
    assignedAt = serializers.DateTimeField(source="assigned_at")

    def get_granteeId(self, seat: Any) -> int | str:
        return customer_id_json(seat.grantee_id)


class SeatsSerializer(serializers.Serializer):
    subscriptionId = serializers.IntegerField(source="id")
    seats = serializers.IntegerField()
    grantees = SeatSerializer(many=True, source="seat_set.all")


# Usage


class UsageRollupSerializer(serializers.Serializer):
    plan = serializers.CharField(allow_null=True)
    subscriptionPlan = serializers.CharField(
        source="entitlement.subscription_plan", allow_null=True
    )
    status = serializers.CharField(allow_null=True)
    period = serializers.CharField()
    periodStart = serializers.DateTimeField(source="window.start")
    periodEnd = serializers.DateTimeField(source="window.end")
    quotas = serializers.DictField(child=serializers.IntegerField())
    usage = serializers.DictField(child=serializers.IntegerField())
    gauges = serializers.SerializerMethodField()

    def get_gauges(self, rollup: Any) -> dict[str, dict[str, int | None]]:
        """Each gauge's level now and the limit on it: levels have no window."""
        return {
            primitive: {
                "level": rollup.levels.get(primitive, 0),
                "limit": rollup.level_limits.get(primitive),
            }
            for primitive in rollup.gauges()
        }


class GaugeChangeInputSerializer(serializers.Serializer):
    op = serializers.ChoiceField(choices=["add", "subtract", "set"])
    amount = serializers.IntegerField(min_value=0, max_value=2**63 - 1)
    idempotencyKey = serializers.RegexField(
        r"^[^\x00]*\Z", max_length=255, required=False, allow_blank=True
    )


class GaugeStateSerializer(serializers.Serializer):
    primitive = serializers.CharField()
    level = serializers.IntegerField()
    limit = serializers.IntegerField(allow_null=True)


class GaugeChangeSerializer(GaugeStateSerializer):
    op = serializers.CharField()
    amount = serializers.IntegerField()
    delta = serializers.IntegerField(help_text="How much the level moved (0: it did not).")
    changedAt = serializers.DateTimeField(source="changed_at")
    idempotencyKey = serializers.SerializerMethodField()
    duplicate = serializers.BooleanField()

    def get_idempotencyKey(self, changed: Any) -> str | None:
        return changed.idempotency_key or None


class UsageRecordInputSerializer(serializers.Serializer):
    primitive = primitive_field
    quantity = serializers.IntegerField(min_value=1, max_value=2**63 - 1, default=1)
    idempotencyKey = serializers.RegexField(
        r"^[^\x00]*\Z", max_length=255, required=False, allow_blank=True
    )
    timestamp = serializers.DateTimeField(required=False)
    enforce = serializers.BooleanField(default=True)


def reservation_data(reservation: Any) -> dict[str, Any]:
    limit = reservation.limit
    return {
        "event": {
            "id": reservation.event_id,
            "primitive": reservation.primitive,
            "quantity": reservation.quantity,
            "timestamp": reservation.occurred_at,
            "idempotencyKey": reservation.idempotency_key or None,
        },
        "usage": {
            "used": reservation.used,
            "limit": limit,
            "remaining": None if limit is None else max(0, limit - reservation.used),
            "windowStart": reservation.window.start,
            "windowEnd": reservation.window.end,
        },
        "duplicate": reservation.duplicate,
    }


class UsageEventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    primitive = serializers.CharField()
    quantity = serializers.IntegerField()
    timestamp = serializers.DateTimeField()
    idempotencyKey = serializers.CharField(allow_null=True)


class WindowUsageSerializer(serializers.Serializer):
    used = serializers.IntegerField()
    limit = serializers.IntegerField(allow_null=True)
    remaining = serializers.IntegerField(allow_null=True)
    windowStart = serializers.DateTimeField()
    windowEnd = serializers.DateTimeField()


class UsageRecordSerializer(serializers.Serializer):
    event = UsageEventSerializer()
    usage = WindowUsageSerializer()
    duplicate = serializers.BooleanField()


class CheckInputSerializer(serializers.Serializer):
    primitive = primitive_field
    quantity = serializers.IntegerField(min_value=1, max_value=2**63 - 1, default=1)


class CheckSerializer(serializers.Serializer):
    allowed = serializers.BooleanField()
    reason = serializers.CharField(allow_null=True)
    limit = serializers.IntegerField(allow_null=True)
    used = serializers.IntegerField()
    remaining = serializers.IntegerField(allow_null=True)
    resetsAt = serializers.DateTimeField(
        source="resets_at", allow_null=True, help_text="None for a gauge: no window resets it."
    )


class UsageBatchEventSerializer(serializers.Serializer):
    userId = CustomerIdInputField(help_text="The customer's id: a number, or a string key.")
    primitive = primitive_field
    quantity = serializers.IntegerField(min_value=1, max_value=2**63 - 1, default=1)
    idempotencyKey = serializers.RegexField(
        r"^[^\x00]*\Z", max_length=255, required=False, allow_null=True, allow_blank=True
    )
    timestamp = serializers.DateTimeField(required=False, allow_null=True)


class UsageBatchInputSerializer(serializers.Serializer):
    """For the schema only: the batch is validated by hand, event by event."""

    events = serializers.ListField(
        child=UsageBatchEventSerializer(), min_length=1, max_length=BATCH_LIMIT
    )


class UsageBatchSerializer(serializers.Serializer):
    # Inline: a field named "errors" cannot be declared on a serializer class.
    results = inline_serializer(
        "UsageBatchResult",
        {
            "index": serializers.IntegerField(),
            "status": serializers.ChoiceField(["created", "duplicate", "conflict", "invalid"]),
            "id": serializers.IntegerField(
                required=False, help_text="The event's id (not when invalid)"
            ),
            "errors": serializers.DictField(
                child=serializers.ListField(child=serializers.CharField()),
                required=False,
                help_text="The event's field errors (invalid, conflict)",
            ),
        },
        many=True,
    )


# Usage records (billing periods)


class UsageRecordStatusSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["current", "recorded", "final"], required=False)


class CycleUsageSerializer(serializers.Serializer):
    """A counter's use over the period, or a gauge's level over it (see the gauges how-to)."""

    kind = serializers.ChoiceField(choices=["counter", "gauge"], default="counter")
    used = serializers.IntegerField(required=False, help_text="A counter's use")
    quota = serializers.IntegerField(allow_null=True, help_text="A gauge's limit, or the quota")
    overage = serializers.IntegerField()
    granted = serializers.IntegerField(required=False, help_text="One-off quota grants")
    level = serializers.IntegerField(required=False, help_text="A gauge's level at the end")
    peak = serializers.IntegerField(required=False, help_text="A gauge's highest level")
    average = serializers.IntegerField(
        required=False, help_text="A gauge's time-weighted average level"
    )
    unitHours = serializers.CharField(
        required=False, help_text="A gauge's level integrated over the period (decimal)"
    )


class CycleAdjustmentSerializer(serializers.Serializer):
    periodId = serializers.IntegerField(help_text="The earlier period the late usage is of")
    primitive = serializers.CharField()
    used = serializers.IntegerField()
    overage = serializers.IntegerField()


class CycleRecordSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    plan = serializers.CharField(source="plan.key")
    status = serializers.ChoiceField(choices=["current", "recorded", "final"])
    cycleStart = serializers.DateTimeField(source="period.start")
    cycleEnd = serializers.DateTimeField(source="period.end")
    closedAt = serializers.DateTimeField(source="closed_at", allow_null=True)
    usage = serializers.DictField(child=CycleUsageSerializer())
    adjustments = serializers.ListField(child=CycleAdjustmentSerializer())


class PageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)


class CycleRecordListSerializer(PageSerializer):
    records = CycleRecordSerializer(many=True)


# Customer self-service (/billing/)


def redirect_url(value: str) -> None:
    """An absolute http(s) URL on a host the project allows, read as a browser reads it:
    no open redirects."""
    if any(char in value for char in "\\\t\r\n\x00") or value != value.strip():
        raise serializers.ValidationError("Must be an absolute http(s) URL.")
    try:
        parts = urlsplit(value)
        host = split_domain_port(parts.netloc)[0] if "@" not in parts.netloc else ""
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise serializers.ValidationError("Must be an absolute http(s) URL.") from None
    if parts.scheme not in ("http", "https") or not host:
        raise serializers.ValidationError(
            "Must be an absolute http(s) URL without user information."
        )
    allowed = billing_settings.ALLOWED_REDIRECT_HOSTS
    if allowed is None:
        allowed = settings.ALLOWED_HOSTS
    if not validate_host(host, allowed):
        raise serializers.ValidationError(
            f"Host {host!r} is not in BILLING_ALLOWED_REDIRECT_HOSTS."
        )


class RedirectURLField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=2048, validators=[redirect_url], **kwargs)


class SelfSubscriptionSerializer(serializers.Serializer):
    id = serializers.SerializerMethodField()
    plan = serializers.CharField(source="plan.key")
    planName = serializers.CharField(
        source="plan.display_name", help_text="The plan as invoices name it."
    )
    status = serializers.CharField()
    seats = serializers.IntegerField()
    currentPeriodStart = serializers.SerializerMethodField()
    currentPeriodEnd = serializers.SerializerMethodField()
    cancelAtPeriodEnd = serializers.BooleanField(source="cancel_at_period_end")
    trialEnd = serializers.DateTimeField(source="trial_end", allow_null=True)

    def get_id(self, subscription: Any) -> str | None:
        """The Stripe subscription's id; null for one the operator set without Stripe."""
        return subscription.stripe_subscription_id or None

    @extend_schema_field(OPTIONAL_DATETIME)
    def get_currentPeriodStart(self, subscription: Any) -> str | None:
        return _current_bound(subscription, "start")

    @extend_schema_field(OPTIONAL_DATETIME)
    def get_currentPeriodEnd(self, subscription: Any) -> str | None:
        return _current_bound(subscription, "end")


class SelfUsageSerializer(serializers.Serializer):
    period = serializers.CharField()
    periodStart = serializers.DateTimeField(source="period_start")
    periodEnd = serializers.DateTimeField(source="period_end")
    usage = serializers.DictField(child=serializers.IntegerField(allow_null=True))


class InvoiceSerializer(serializers.Serializer):
    id = serializers.CharField()
    amount = serializers.IntegerField(source="total")
    currency = serializers.CharField()
    status = serializers.CharField()
    paidAt = serializers.SerializerMethodField()
    pdfUrl = serializers.SerializerMethodField()

    @extend_schema_field(OPTIONAL_DATETIME)
    def get_paidAt(self, invoice: Any) -> str | None:
        paid_at = (invoice.stripe_data.get("status_transitions") or {}).get("paid_at")
        return _datetime(_from_timestamp(paid_at))

    def get_pdfUrl(self, invoice: Any) -> str | None:
        return invoice.stripe_data.get("invoice_pdf")


def _from_timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if isinstance(value, int) else None


class InvoiceListSerializer(PageSerializer):
    invoices = InvoiceSerializer(many=True)


class CheckoutInputSerializer(serializers.Serializer):
    priceId = serializers.CharField(max_length=255)
    successUrl = RedirectURLField()
    cancelUrl = RedirectURLField()


class PortalInputSerializer(serializers.Serializer):
    returnUrl = RedirectURLField()


class RedirectSerializer(serializers.Serializer):
    url = serializers.URLField()


# Upcoming charges


class ChargeLineSerializer(serializers.Serializer):
    primitive = serializers.CharField(allow_null=True, help_text="null for the plan's own lines")
    line = serializers.CharField(help_text="tier-2, packages, minimum, late-<period id>, ...")
    description = serializers.CharField()
    quantity = serializers.IntegerField()
    unitAmount = serializers.CharField(help_text="Minor units, a decimal")
    amount = serializers.CharField(help_text="quantity x unitAmount, minor units, exact")


class ChargesSerializer(serializers.Serializer):
    lines = ChargeLineSerializer(many=True)
    total = serializers.CharField()


class UpcomingSerializer(serializers.Serializer):
    plan = serializers.CharField()
    invoiceDisplayName = serializers.CharField()
    currency = serializers.CharField()
    periodStart = serializers.DateTimeField()
    periodEnd = serializers.DateTimeField()
    asOf = serializers.DateTimeField()
    minimumCommitment = serializers.CharField(allow_null=True)
    charges = ChargesSerializer(help_text="So far: the usage until now, at the plan's prices.")
    projection = ChargesSerializer(
        help_text="The whole period: usage so far extrapolated linearly to its end."
    )


def upcoming_data(upcoming: Any) -> dict[str, Any]:
    from ..cycles.pricing import decimal_text

    plan = upcoming.plan
    return {
        "plan": plan.key,
        "invoiceDisplayName": plan.display_name,
        "currency": plan.currency,
        "periodStart": upcoming.period.start,
        "periodEnd": upcoming.period.end,
        "asOf": upcoming.at,
        "minimumCommitment": None if upcoming.minimum is None else decimal_text(upcoming.minimum),
        "charges": {
            "lines": [line.as_json() for line in upcoming.so_far],
            "total": decimal_text(upcoming.so_far_total),
        },
        "projection": {
            "lines": [line.as_json() for line in upcoming.projection],
            "total": decimal_text(upcoming.projection_total),
        },
    }


# License checks


class LicenseCheckInputSerializer(serializers.Serializer):
    granteeIds = serializers.CharField(max_length=10_000)
    grace = serializers.IntegerField(min_value=0, max_value=3650, required=False, default=0)

    def validate_granteeIds(self, value: str) -> list[str]:
        ids = [part.strip() for part in value.split(",") if part.strip()]
        if not ids or len(ids) > 100:
            raise serializers.ValidationError("1 to 100 comma-separated grantee ids.")
        return ids


class CapabilitySerializer(serializers.Serializer):
    capability = serializers.CharField()
    expiry = serializers.DateTimeField(allow_null=True)


class LicenseCheckSerializer(serializers.Serializer):
    capabilities = CapabilitySerializer(many=True)
    granteeIds = serializers.ListField(child=serializers.CharField())
