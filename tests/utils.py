"""Helpers shared by the test modules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from billing_app.conf import customer_model
from billing_app.entitlements import version_of
from billing_app.exceptions import InvalidInput
from billing_app.models import (
    AccountKit,
    BillingPeriod,
    KitAssignment,
    Plan,
    PlanFeature,
    PlanQuota,
    Seat,
    Subscription,
)


def error_fields(excinfo: pytest.ExceptionInfo[InvalidInput]) -> set[str]:
    """The arguments an ``InvalidInput`` names."""
    return set(excinfo.value.fields)


def assert_field_error(response: Any, field: str, status: int = 400) -> None:
    """The API refused with ``status`` and named ``field`` as the client sent it."""
    assert response.status_code == status, response.content
    assert field in response.json(), response.json()


def quotas_of(plan: Plan) -> dict[str, int]:
    return dict(PlanQuota.objects.filter(plan=plan).values_list("primitive", "limit"))


def plan_state() -> list[tuple]:
    """Everything a plan upsert may touch, to prove a refusal changed nothing."""
    plans = list(
        Plan.objects.order_by("key").values_list(
            "key",
            "name",
            "account_kit_id",
            "stripe_price_id",
            "period",
            "billing_cadence",
            "currency",
            "active",
            "stripe_meter_event",
            "updated_at",
        )
    )
    quotas = list(
        PlanQuota.objects.order_by("plan__key", "primitive").values_list(
            "plan__key", "primitive", "limit", "per_seat", "overage", "overage_unit_price"
        )
    )
    features = list(
        PlanFeature.objects.order_by("plan__key", "feature").values_list("plan__key", "feature")
    )
    return plans + quotas + features


def kit_state() -> list[tuple]:
    """Everything a kit upsert may touch."""
    kits = list(AccountKit.objects.order_by("key").values_list("key", "name", "updated_at"))
    primitives = list(
        AccountKit.objects.order_by("key", "primitives__primitive").values_list(
            "key", "primitives__primitive", "primitives__rate_per_minute"
        )
    )
    return kits + primitives


def iso(instant: datetime) -> str:
    """An instant as the API writes it: ISO 8601, UTC as ``Z``."""
    return instant.isoformat().replace("+00:00", "Z")


def json_id(pk: Any) -> int | str:
    """A key as the API answers it: an integer as a JSON number, any other (a UUID) as a
    string."""
    return pk if isinstance(pk, int) else str(pk)


def customers_count() -> int:
    return customer_model()._default_manager.count()


def holders(subscription_id: Any) -> set[Any]:
    """The ids of the users holding the subscription's seats."""
    seats = Seat.objects.filter(subscription_id=subscription_id)
    return set(seats.values_list("grantee_id", flat=True))


def subscription_state(customer: Any) -> tuple:
    """Everything subscription_set writes for a customer (its subscription, kit, billing
    periods and entitlement version), to prove a refusal wrote none of it."""
    subscription = Subscription.objects.filter(customer=customer).values().first()
    kit = KitAssignment.objects.filter(customer=customer).values_list("kit_id", flat=True).first()
    periods = list(BillingPeriod.objects.filter(customer=customer).order_by("start").values())
    return subscription, kit, periods, version_of(customer.pk)
