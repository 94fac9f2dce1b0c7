"""What the usage endpoints, the admin and the billing page show: read from the same
entitlement and window as enforcement uses, so what is shown is what is enforced."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from ..entitlements import Entitlement, entitlement_for
from ..periods import Window
from .ledger import counters_of
from .levels import level_of, levels_of


@dataclass(frozen=True)
class UsageRollup:
    entitlement: Entitlement
    window: Window
    quotas: dict[str, int]
    usage: dict[str, int]
    # Gauges: their levels now, and the limits on them (no window).
    levels: dict[str, int] = field(default_factory=dict)
    level_limits: dict[str, int] = field(default_factory=dict)

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
        """Every counter worth showing: quota'd, used, or allowed by the kit."""
        counters = {*self.quotas, *self.usage, *(self.entitlement.kit or {})}
        return sorted(counters - set(self.gauges()))

    def gauges(self) -> list[str]:
        """Every gauge worth showing: limited by the plan, or with a level."""
        return sorted({*self.levels, *self.level_limits})


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
        levels=levels_of(customer_id),
        level_limits={p: q.limit for p, q in entitlement.gauges.items()},
    )


@dataclass(frozen=True)
class GaugeState:
    primitive: str
    level: int
    limit: int | None


def gauge_state(*, customer_id: Any, primitive: str) -> GaugeState:
    """A gauge's level now, and the limit on it that applies."""
    quota = entitlement_for(customer_id=customer_id, fresh=True).gauge(primitive)
    return GaugeState(primitive, level_of(customer_id, primitive), quota.limit if quota else None)
