"""Input and output shapes of the API, in the camelCase the contracts use.

Input serializers only parse; views hand ``snake_case(serializer.validated_data)`` to a
service, whose errors name the same fields.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host
from rest_framework import serializers

from ..conf import billing_settings
from ..models import SubscriptionStatus
from ..periods import PERIODS


def snake_case(data: dict[str, Any]) -> dict[str, Any]:
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(): value for key, value in data.items()}


def camel_case(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# Account kits


class KitPrimitiveSerializer(serializers.Serializer):
    ratePerMinute = serializers.IntegerField(
        min_value=0, max_value=2**31 - 1, allow_null=True, required=False
    )


class AccountKitInputSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200)
    primitives = serializers.DictField(child=KitPrimitiveSerializer(), required=False)

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


# Plans


class PlanInputSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200)
    accountKitId = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    stripePriceId = serializers.CharField(required=False, allow_blank=True, max_length=255)
    quotas = serializers.DictField(
        child=serializers.IntegerField(min_value=0, max_value=2**63 - 1), required=False
    )
    period = serializers.ChoiceField(choices=PERIODS, required=False)
    billingCadence = serializers.CharField(required=False, max_length=32)
    currency = serializers.CharField(required=False, max_length=3)
    active = serializers.BooleanField(required=False)
    # slug -> unit price past the quota, in the currency's minor units ("0.5" = half a cent)
    overage = serializers.DictField(
        child=serializers.DecimalField(max_digits=24, decimal_places=12, min_value=0),
        required=False,
    )
    stripeMeterEvent = serializers.CharField(required=False, allow_blank=True, max_length=100)


class PlanSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    key = serializers.CharField()
    name = serializers.CharField()
    accountKitId = serializers.CharField(source="account_kit.key", allow_null=True, default=None)
    stripePriceId = serializers.CharField(source="stripe_price_id")
    quotas = serializers.SerializerMethodField()
    period = serializers.CharField()
    billingCadence = serializers.CharField(source="billing_cadence")
    currency = serializers.CharField()
    active = serializers.BooleanField()
    createdAt = serializers.DateTimeField(source="created_at")
    updatedAt = serializers.DateTimeField(source="updated_at")

    overage = serializers.SerializerMethodField()
    stripeMeterEvent = serializers.CharField(source="stripe_meter_event")

    def get_quotas(self, plan: Any) -> dict[str, int]:
        return {quota.primitive: quota.limit for quota in plan.quotas.all()}

    def get_overage(self, plan: Any) -> dict[str, str]:
        """The billed quotas' unit prices; a quota not listed blocks."""
        return {
            quota.primitive: f"{quota.overage_unit_price.normalize():f}"
            for quota in plan.quotas.all()
            if quota.overage == "bill"
        }


# Tenants


class TenantInputSerializer(serializers.Serializer):
    email = serializers.EmailField()


class TenantSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    email = serializers.EmailField()


class TokenInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=50, required=False, default="api")


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Shown once: only its hash is stored.")
    prefix = serializers.CharField()
    name = serializers.CharField()


# Subscriptions and usage


class SubscriptionInputSerializer(serializers.Serializer):
    planKey = serializers.SlugField(max_length=64)
    status = serializers.ChoiceField(choices=SubscriptionStatus.values, required=False)
    stripeCustomerId = serializers.CharField(required=False, allow_blank=True, max_length=255)
    stripeSubscriptionId = serializers.CharField(required=False, allow_blank=True, max_length=255)
    currentPeriodStart = serializers.DateTimeField(required=False, allow_null=True)
    currentPeriodEnd = serializers.DateTimeField(required=False, allow_null=True)
    cancelAtPeriodEnd = serializers.BooleanField(required=False)
    assignKit = serializers.BooleanField(default=True)


class SubscriptionSerializer(serializers.Serializer):
    planKey = serializers.CharField(source="plan.key")
    status = serializers.CharField()
    stripeCustomerId = serializers.CharField(source="stripe_customer_id")
    stripeSubscriptionId = serializers.CharField(source="stripe_subscription_id")
    currentPeriodStart = serializers.DateTimeField(source="current_period_start")
    currentPeriodEnd = serializers.DateTimeField(source="current_period_end")
    cancelAtPeriodEnd = serializers.BooleanField(source="cancel_at_period_end")
    accountKitId = serializers.SerializerMethodField()
    statusChangedAt = serializers.DateTimeField(source="status_changed_at")
    createdAt = serializers.DateTimeField(source="created_at")
    updatedAt = serializers.DateTimeField(source="updated_at")

    def get_accountKitId(self, subscription: Any) -> str | None:
        return self.context.get("kit_key")


class UsageRollupSerializer(serializers.Serializer):
    plan = serializers.CharField(allow_null=True)
    status = serializers.CharField(allow_null=True)
    period = serializers.CharField()
    periodStart = serializers.DateTimeField(source="period_start")
    periodEnd = serializers.DateTimeField(source="period_end")
    quotas = serializers.DictField(child=serializers.IntegerField())
    usage = serializers.DictField(child=serializers.IntegerField())


# Metering


primitive_field = serializers.RegexField(
    r"^[a-z0-9][a-z0-9._-]*\Z",
    max_length=64,
    error_messages={"invalid": "A primitive is a slug such as 'seo' or 'email.send'."},
)


class UsageRecordInputSerializer(serializers.Serializer):
    primitive = primitive_field
    quantity = serializers.IntegerField(min_value=1, max_value=2**63 - 1, default=1)
    idempotencyKey = serializers.CharField(max_length=255, required=False, allow_blank=True)
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
    resetsAt = serializers.DateTimeField(source="resets_at")


class UsageBatchEventSerializer(serializers.Serializer):
    userId = serializers.IntegerField()
    primitive = primitive_field
    quantity = serializers.IntegerField(min_value=1, default=1)
    idempotencyKey = serializers.CharField(required=False)
    timestamp = serializers.DateTimeField(required=False)


class UsageBatchInputSerializer(serializers.Serializer):
    """For the schema only: the batch is validated by hand, event by event."""

    events = UsageBatchEventSerializer(many=True)


class UsageBatchResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(["created", "duplicate", "conflict", "invalid"])
    id = serializers.IntegerField(required=False)
    errors = serializers.DictField(required=False)


class UsageBatchSerializer(serializers.Serializer):
    results = UsageBatchResultSerializer(many=True)


# Tenant self-service (/billing/)


def redirect_url(value: str) -> str:
    """An absolute http(s) URL on a host the project allows: no open redirects."""
    parts = urlsplit(value)
    host = split_domain_port(parts.netloc.rpartition("@")[2])[0]
    allowed = billing_settings.ALLOWED_REDIRECT_HOSTS
    if allowed is None:
        allowed = settings.ALLOWED_HOSTS
    if parts.scheme not in ("http", "https") or not host:
        raise serializers.ValidationError("Must be an absolute http(s) URL.")
    if not validate_host(host, allowed):
        raise serializers.ValidationError(
            f"Host {host!r} is not in BILLING_ALLOWED_REDIRECT_HOSTS."
        )
    return value


class RedirectURLField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=2048, validators=[redirect_url], **kwargs)


class SelfSubscriptionSerializer(serializers.Serializer):
    id = serializers.SerializerMethodField()
    plan = serializers.CharField(source="plan.key")
    status = serializers.CharField()
    currentPeriodStart = serializers.DateTimeField(source="current_period_start")
    currentPeriodEnd = serializers.DateTimeField(source="current_period_end")
    cancelAtPeriodEnd = serializers.BooleanField(source="cancel_at_period_end")

    def get_id(self, subscription: Any) -> str | None:
        """The Stripe subscription's id; null for one the operator set without Stripe."""
        return subscription.stripe_subscription_id or None


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

    def get_paidAt(self, invoice: Any) -> str | None:
        paid_at = (invoice.stripe_data.get("status_transitions") or {}).get("paid_at")
        return serializers.DateTimeField().to_representation(_from_timestamp(paid_at))

    def get_pdfUrl(self, invoice: Any) -> str | None:
        return invoice.stripe_data.get("invoice_pdf")


def _from_timestamp(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value else None


class PageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)


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


class CancelInputSerializer(serializers.Serializer):
    when = serializers.ChoiceField(choices=["end", "now"], default="end")


class CancelSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    cancelAt = serializers.DateTimeField(allow_null=True)


def cancel_answer(subscription: Any) -> dict[str, Any]:
    """``{success, cancelAt}``: when it ended, or when it will (the period's end)."""
    ended = subscription.status == SubscriptionStatus.CANCELED
    cancel_at = subscription.status_changed_at if ended else subscription.current_period_end
    return CancelSerializer({"success": True, "cancelAt": cancel_at}).data


# Usage records (billing cycles)


class UsageRecordStatusSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["current", "recorded", "final"], required=False)


class CycleRecordSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    plan = serializers.CharField(source="plan.key")
    status = serializers.CharField()
    cycleStart = serializers.DateTimeField(source="cycle_start")
    cycleEnd = serializers.DateTimeField(source="cycle_end")
    closedAt = serializers.DateTimeField(source="closed_at")
    usage = serializers.SerializerMethodField()

    def get_usage(self, record: Any) -> dict[str, dict[str, int | None]]:
        """{primitive: {used, quota, overage}}; an open record's as of now."""
        from ..cycles import current_usage

        return current_usage(record) if record.status == "current" else record.usage


class CycleRecordListSerializer(PageSerializer):
    records = CycleRecordSerializer(many=True)


class ChangePlanInputSerializer(serializers.Serializer):
    planKey = serializers.SlugField(max_length=64)
