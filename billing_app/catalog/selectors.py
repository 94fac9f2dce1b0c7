"""Reads of the catalog."""

from __future__ import annotations

from django.db.models import QuerySet

from ..models import AccountKit, Plan


def plan_list() -> QuerySet[Plan]:
    return Plan.objects.select_related("account_kit", "credits").prefetch_related(
        "quotas", "features", "credit_costs"
    )


def account_kit_list() -> QuerySet[AccountKit]:
    return AccountKit.objects.prefetch_related("primitives")
