"""An in-process API shaped like the Naive SDK, so host code reads naturally::

    from billing_app.client import billing

    billing.plans.upsert(key="pro", name="Pro", quotas={"seo": 1000}, period="month")
    billing.for_customer(org).set_subscription(plan_key="pro", status="active")
    billing.for_customer(org).usage()
    billing.for_customer(org).gauge("storage").add(upload.size)

Every method is a thin call onto a service or selector. ``for_user`` is ``for_customer``
under the seeds' name.
"""

from __future__ import annotations

from typing import Any

from .catalog import selectors as catalog_selectors
from .catalog import services as catalog
from .customers import selectors as customers_selectors
from .customers import services as customers
from .cycles.selectors import Upcoming, upcoming
from .entitlements import Entitlement, entitlement_for
from .metering import credits
from .metering import services as metering
from .metering.credits import Projection
from .metering.ledger import Reservation
from .metering.levels import Changed
from .metering.selectors import GaugeState, UsageRollup, gauge_state, usage_rollup
from .models import AccountKit, CreditGrant, Plan, Subscription
from .subscriptions import licenses
from .subscriptions import selectors as subscriptions_selectors
from .subscriptions import services as subscriptions


class _Plans:
    def upsert(self, **fields: Any) -> Plan:
        return catalog.plan_upsert(**fields)[0]

    def list(self) -> list[Plan]:
        return list(catalog_selectors.plan_list())


class _AccountKits:
    def upsert(self, **fields: Any) -> AccountKit:
        return catalog.account_kit_upsert(**fields)[0]

    def list(self) -> list[AccountKit]:
        return list(catalog_selectors.account_kit_list())


class _Customers:
    def create(self, *, email: str, name: str = "") -> Any:
        return customers.customer_create(email=email, name=name)


class CustomerBilling:
    def __init__(self, customer: Any) -> None:
        self.customer = customer

    def set_subscription(self, *, plan_key: str, **fields: Any) -> Subscription:
        return subscriptions.subscription_set(customer=self.customer, plan_key=plan_key, **fields)

    def subscription(self) -> Subscription | None:
        return subscriptions_selectors.subscription_get(customer=self.customer)

    def start_trial(self, *, plan_key: str, **fields: Any) -> Subscription:
        """A trial without Stripe or a card (one per customer)."""
        return subscriptions.trial_start(customer=self.customer, plan_key=plan_key, **fields)

    def upcoming(self) -> Upcoming | None:
        """The open period's charges so far and as projected to its end."""
        return upcoming(customer=self.customer)

    def entitlement(self) -> Entitlement:
        """What applies now: plan, status, quotas, kit, features, the current window."""
        return entitlement_for(customer_id=self.customer.pk, fresh=True)

    def has_feature(self, feature: str) -> bool:
        return self.entitlement().has_feature(feature)

    def usage(self) -> UsageRollup:
        return usage_rollup(customer_id=self.customer.pk)

    def record(self, primitive: str, quantity: int = 1, **fields: Any) -> Reservation:
        """Record usage that happened (as ``POST .../billing/usage`` does)."""
        return metering.usage_record(
            customer_id=self.customer.pk, primitive=primitive, quantity=quantity, **fields
        )

    def credits(self) -> Projection:
        """The credit balance and the grants, as the next draw would find them."""
        return credits.credits_state(customer_id=self.customer.pk)

    def grant_credits(self, amount: int, *, reason: str, **fields: Any) -> CreditGrant:
        """Give credits (``source`` "manual" by default; a reason is required)."""
        fields.setdefault("source", "manual")
        return credits.credits_grant(
            customer_id=self.customer.pk, amount=amount, reason=reason, **fields
        )

    def gauge(self, primitive: str) -> Gauge:
        """A gauge of the customer (``storage``): ``add(n)``, ``subtract(n)``, ``set(n)``,
        ``level()``."""
        return Gauge(self.customer, primitive)

    def assign_kit(self, kit_key: str | None) -> None:
        kit = catalog.account_kit_get(ref=kit_key) if kit_key else None
        customers.kit_assign(customer=self.customer, kit=kit)

    def issue_token(self, *, name: str = "api", grantee: Any = None) -> str:
        return customers.tenant_token_issue(customer=self.customer, grantee=grantee, name=name)[1]


class Gauge:
    """One gauge of one customer. A change that raises the level past the plan's limit is
    refused (``QuotaExceeded``); one that lowers it always succeeds, and stops at zero.
    ``idempotency_key`` makes a change once however often it is sent."""

    def __init__(self, customer: Any, primitive: str) -> None:
        self.customer = customer
        self.primitive = primitive

    def _change(self, op: str, amount: int, idempotency_key: str) -> Changed:
        return metering.gauge_change(
            customer_id=self.customer.pk,
            primitive=self.primitive,
            op=op,
            amount=amount,
            idempotency_key=idempotency_key,
        )

    def add(self, amount: int, *, idempotency_key: str = "") -> Changed:
        return self._change("add", amount, idempotency_key)

    def subtract(self, amount: int, *, idempotency_key: str = "") -> Changed:
        return self._change("subtract", amount, idempotency_key)

    def set(self, amount: int, *, idempotency_key: str = "") -> Changed:
        return self._change("set", amount, idempotency_key)

    def level(self) -> int:
        return self.state().level

    def state(self) -> GaugeState:
        """The level now, and the limit on it (None: unlimited)."""
        return gauge_state(customer_id=self.customer.pk, primitive=self.primitive)


class Billing:
    plans = _Plans()
    account_kits = _AccountKits()
    customers = _Customers()
    users = customers

    def for_customer(self, customer_or_id: Any) -> CustomerBilling:
        customer = (
            customer_or_id
            if hasattr(customer_or_id, "pk")
            else customers_selectors.customer_get(customer_id=customer_or_id)
        )
        return CustomerBilling(customer)

    for_user = for_customer

    def license_check(self, *grantee_ids: Any, grace_days: int = 0) -> list[dict[str, Any]]:
        """The capabilities these grantees hold (Salable's license check)."""
        return licenses.license_check(grantee_ids=grantee_ids, grace_days=grace_days)


billing = Billing()
