"""An in-process API shaped like the Naive SDK, so host code reads naturally::

    from billing_app.client import billing

    billing.plans.upsert(key="pro", name="Pro", quotas={"seo": 1000}, period="month")
    billing.for_user(user).set_subscription(plan_key="pro", status="active")
    billing.for_user(user).usage()

Every method is a thin call onto ``services`` or ``selectors``.
"""

from __future__ import annotations

from typing import Any

from . import selectors, services
from .models import AccountKit, Plan, Subscription


class _Plans:
    def upsert(self, **fields: Any) -> Plan:
        return services.plan_upsert(**fields)[0]

    def list(self) -> list[Plan]:
        return list(selectors.plan_list())


class _AccountKits:
    def upsert(self, **fields: Any) -> AccountKit:
        return services.account_kit_upsert(**fields)[0]

    def list(self) -> list[AccountKit]:
        return list(selectors.account_kit_list())


class _Users:
    def create(self, *, email: str) -> Any:
        return services.tenant_create(email=email)


class TenantBilling:
    def __init__(self, user: Any) -> None:
        self.user = user

    def set_subscription(self, *, plan_key: str, **fields: Any) -> Subscription:
        return services.subscription_set(user=self.user, plan_key=plan_key, **fields)

    def subscription(self) -> Subscription | None:
        return selectors.subscription_get(user=self.user)

    def usage(self) -> selectors.UsageRollup:
        return selectors.usage_rollup(user=self.user)

    def assign_kit(self, kit_key: str | None) -> None:
        kit = services.account_kit_get(ref=kit_key) if kit_key else None
        services.kit_assign(user=self.user, kit=kit)

    def issue_token(self, *, name: str = "api") -> str:
        return services.tenant_token_issue(user=self.user, name=name)[1]


class Billing:
    plans = _Plans()
    account_kits = _AccountKits()
    users = _Users()

    def for_user(self, user_or_id: Any) -> TenantBilling:
        user = user_or_id if hasattr(user_or_id, "pk") else selectors.tenant_get(user_id=user_or_id)
        return TenantBilling(user)


billing = Billing()
