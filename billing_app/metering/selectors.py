"""What the usage endpoints, the admin and the billing page show: read from the same
entitlement and window as enforcement uses, so what is shown is what is enforced."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from ..entitlements import Entitlement, entitlement_for
from ..periods import Window
from .ledger import counters_of


@dataclass(frozen=True)
class UsageRollup:
    entitlement: Entitlement
    window: Window
    quotas: dict[str, int]
    usage: dict[str, int]

    @property
    def plan(self) -> str | None:
        return self.entitlement.plan

    @property
    def status(self) -> str | None:
        return self.entitlement.status

    @property
    def period(self) -> str:
        return self.entitlement.period

    def primitives(self) -> list[str]:
        """Every primitive worth showing: quota'd, used, or allowed by the kit."""
        return sorted({*self.quotas, *self.usage, *(self.entitlement.kit or {})})


def usage_rollup(*, customer_id: Any, at: datetime | None = None) -> UsageRollup:
    """The customer's usage in the quota window containing ``at`` (now), against the
    quotas that apply. Reads the counters, one row per primitive, so its cost does not
    grow with the number of events in the window."""
    entitlement = entitlement_for(customer_id=customer_id, fresh=True)
    window = entitlement.window(at or timezone.now())
    return UsageRollup(
        entitlement=entitlement,
        window=window,
        quotas=entitlement.limits(window),
        usage=dict(counters_of(customer_id, window.start)),
    )
