"""Reads of the catalog."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import QuerySet

from ..models import AccountKit, Plan, PlanPrice, Product


def plan_list() -> QuerySet[Plan]:
    return Plan.objects.select_related(
        "account_kit", "product", "trial_fallback_plan", "credits"
    ).prefetch_related("quotas", "features", "prices", "credit_costs")


def product_list() -> QuerySet[Product]:
    return Product.objects.all()


def account_kit_list() -> QuerySet[AccountKit]:
    return AccountKit.objects.prefetch_related("primitives")


def price_json(price: PlanPrice) -> dict[str, Any]:
    """A price as the API and plans files write it: camelCase, amounts as decimal text."""

    def text(value: Decimal | None) -> str | None:
        return None if value is None else f"{value.normalize():f}"

    return {
        "primitive": price.primitive,
        "model": price.model,
        "unitAmount": text(price.unit_amount),
        "packageSize": price.package_size,
        "tiers": [
            {
                "upTo": tier["up_to"],
                "unitAmount": tier["unit_amount"],
                "flatAmount": tier.get("flat_amount"),
            }
            for tier in price.tiers
        ],
        "includedQuantity": price.included_quantity,
        "paymentTerms": price.payment_terms,
    }
