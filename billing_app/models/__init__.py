"""The app's models, one module per part of the data flow."""

from .catalog import (
    AccountKit,
    KitPrimitive,
    Period,
    Plan,
    PlanFeature,
    PlanPrice,
    PlanQuota,
    PrimitiveField,
    Product,
    TrialEnd,
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
from .cycles import AdvanceCharge, UsageRecord
from .metering import (
    GaugeEvent,
    GaugeLevel,
    IdempotencyKey,
    RateCounter,
    UsageAlert,
    UsageCounter,
    UsageEvent,
)
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
    "AdvanceCharge",
    "BillingPeriod",
    "CreditAutoTopUp",
    "CreditBalance",
    "CreditEntry",
    "CreditGrant",
    "CreditPack",
    "EntitlementVersion",
    "GaugeEvent",
    "GaugeLevel",
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
    "PlanPrice",
    "PlanQuota",
    "PrimitiveField",
    "Problem",
    "Product",
    "QuotaGrant",
    "RateCounter",
    "Seat",
    "Subscription",
    "SubscriptionStatus",
    "TenantToken",
    "TrialEnd",
    "UsageAlert",
    "UsageCounter",
    "UsageEvent",
    "UsageRecord",
    "validate_primitive",
]
