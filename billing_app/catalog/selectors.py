"""Reads of the catalog."""

from __future__ import annotations

from django.db.models import QuerySet

from ..models import AccountKit, Plan, Product


def plan_list() -> QuerySet[Plan]:
    return Plan.objects.select_related(
        "account_kit", "product", "trial_fallback_plan", "credits"
    ).prefetch_related("quotas", "features", "prices", "credit_costs")


def product_list() -> QuerySet[Product]:
    return Product.objects.all()


def account_kit_list() -> QuerySet[AccountKit]:
    return AccountKit.objects.prefetch_related("primitives")
