"""The app's models, one module per part of the data flow."""

from .catalog import (
    AccountKit,
    KitPrimitive,
    Period,
    Plan,
    PlanFeature,
    PlanQuota,
    PrimitiveField,
    validate_primitive,
)
from .credits import (
    CreditAutoTopUp,
    CreditBalance,
    CreditEntry,
    CreditGrant,
    CreditPack,
    PlanCreditCost,
    PlanCredits,
)
from .customers import EntitlementVersion, KitAssignment, OperatorKey, QuotaGrant, TenantToken
from .cycles import UsageRecord
from .metering import IdempotencyKey, RateCounter, UsageAlert, UsageCounter, UsageEvent
from .outbox import OutboxMessage
from .problems import Problem
from .subscriptions import (
    ENDED_STATUSES,
    BillingPeriod,
    Seat,
    Subscription,
    SubscriptionStatus,
)

__all__ = [
    "ENDED_STATUSES",
    "AccountKit",
    "BillingPeriod",
    "CreditAutoTopUp",
    "CreditBalance",
    "CreditEntry",
    "CreditGrant",
    "CreditPack",
    "EntitlementVersion",
    "IdempotencyKey",
    "KitAssignment",
    "KitPrimitive",
    "OperatorKey",
    "OutboxMessage",
    "Period",
    "Plan",
    "PlanCreditCost",
    "PlanCredits",
    "PlanFeature",
    "PlanQuota",
    "PrimitiveField",
    "Problem",
    "QuotaGrant",
    "RateCounter",
    "Seat",
    "Subscription",
    "SubscriptionStatus",
    "TenantToken",
    "UsageAlert",
    "UsageCounter",
    "UsageEvent",
    "UsageRecord",
    "validate_primitive",
]
