"""What applies to a customer now: the one answer every reader uses.

Enforcement, the usage endpoints, ``/billing/usage``, the admin and the billing page all
read :func:`entitlement_for`. An entitlement carries the version it was built at; every
change to what a customer may do raises that version in the database, in the change's own
transaction (:func:`entitlements_changed` and friends, the only writers of the table). The
reservation statement checks the version, so a process holding an old entitlement finds
out on its next call and rebuilds: no cache has to be told, and none may be trusted.

Entitlements are kept per process (a small LRU) and, with ``BILLING_CACHE``, in a shared
Django cache. Either may be stale or down; the database decides.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import connection
from django.utils import timezone

from .conf import billing_settings, customer_model
from .exceptions import BillingImproperlyConfigured
from .models import (
    ENDED_STATUSES,
    AccountKit,
    CreditAutoTopUp,
    CreditBalance,
    EntitlementVersion,
    KitAssignment,
    Plan,
    PlanQuota,
    QuotaGrant,
    Subscription,
    SubscriptionStatus,
)
from .periods import Window, window_for
from .validation import MAX_BIGINT

logger = logging.getLogger(__name__)

USABLE_STATUSES = frozenset({SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE})


@dataclass(frozen=True, slots=True)
class Quota:
    limit: int
    # Past the limit calls go on and the excess is billed (overage), instead of refused.
    billed: bool = False
    # What one unit past the limit is billed, in minor units (when billed).
    price: Decimal | None = None


@dataclass(frozen=True)
class Entitlement:
    """Everything that decides a customer's calls, in one value."""

    customer_id: Any
    version: int
    # The plan in force (the fallback plan when the subscription is inactive), or None:
    # no subscription, nothing limited.
    plan: str | None = None
    # The subscription's own plan and status, as the customer sees them.
    subscription_plan: str | None = None
    status: str | None = None
    period: str = "month"
    anchor: datetime | None = None
    restart: datetime | None = None
    quotas: Mapping[str, Quota] = field(default_factory=dict)
    # Limits on gauges' levels (storage): no window, no grants.
    gauges: Mapping[str, Quota] = field(default_factory=dict)
    # primitive -> calls per minute (None: no rate limit); None: the customer has no kit.
    kit: Mapping[str, int | None] | None = None
    features: frozenset[str] = frozenset()
    seats: int = 1
    # Why every call is refused (402 subscription_inactive), or None.
    inactive: str | None = None
    # A past_due customer keeps its quotas until then.
    grace_until: datetime | None = None
    # One-off increases an operator granted: (primitive, window start) -> extra units.
    grants: Mapping[tuple[str, datetime], int] = field(default_factory=dict)
    # What one unit of a primitive costs in credits; a primitive not here draws none.
    credit_costs: Mapping[str, int] = field(default_factory=dict)
    # The credits the active grants gave, and since when (for low-balance alerts).
    credits_granted: int = 0
    credits_granted_since: datetime | None = None
    # The most the billed overage of a quota window may cost, in minor units (None: no cap).
    spend_cap: Decimal | None = None
    # A draw that leaves the balance below this buys the customer's auto top-up pack.
    auto_top_up_below: int | None = None
    _windows: dict[str, Window] = field(default_factory=dict, compare=False, repr=False, hash=False)

    def window(self, at: datetime) -> Window:
        # Every call asks for the window of now: the last one answered holds until its end.
        last = self._windows.get(billing_settings.TIME_ZONE)
        if last is not None and last.start <= at < last.end:
            return last
        window = window_for(
            self.period,
            at,
            anchor=self.anchor,
            tz=billing_settings.TIME_ZONE,
            restart=self.restart,
        )
        self._windows[billing_settings.TIME_ZONE] = window
        return window

    def quota(self, primitive: str, window: Window) -> Quota | None:
        """The primitive's quota in ``window`` (grants included); None when unlimited."""
        quota = self.quotas.get(primitive)
        extra = self.grants.get((primitive, window.start), 0)
        if quota is None or not extra:
            return quota
        return Quota(quota.limit + extra, quota.billed, quota.price)

    def limit(self, primitive: str, at: datetime | None = None) -> int | None:
        """The primitive's limit in the window of ``at`` (now); None when unlimited."""
        quota = self.quota(primitive, self.window(at or timezone.now()))
        return None if quota is None else quota.limit

    def limits(self, window: Window) -> dict[str, int]:
        """Every quota'd primitive's limit in ``window``."""
        return {
            primitive: quota.limit
            for primitive in self.quotas
            if (quota := self.quota(primitive, window)) is not None
        }

    def gauge(self, primitive: str) -> Quota | None:
        """The limit on the gauge's level; None when unlimited."""
        return self.gauges.get(primitive)

    def rate(self, primitive: str) -> int | None:
        return self.kit.get(primitive) if self.kit else None

    def allows(self, primitive: str) -> bool:
        return self.kit is None or primitive in self.kit

    def inactive_reason(self, at: datetime) -> str | None:
        if self.grace_until is not None and at >= self.grace_until:
            return f"The subscription has been past due since before {self.grace_until:%Y-%m-%d}."
        return self.inactive

    def has_feature(self, feature: str, at: datetime | None = None) -> bool:
        """Whether the plan in force grants ``feature`` at ``at`` (now): not once the
        subscription is unusable, as calls are not (a past_due one after its grace)."""
        return self.inactive_reason(at or timezone.now()) is None and feature in self.features


# --- reading ---------------------------------------------------------------------------


def entitlement_for(*, customer_id: Any, fresh: bool = False) -> Entitlement:
    """The customer's entitlement: from this process's cache, the shared cache, or the
    database (always the database with ``fresh``)."""
    if not fresh:
        cached = _local.get(customer_id)
        if cached is not None:
            return cached
        cached = _shared_get(customer_id)
        if cached is not None:
            _local.put(customer_id, cached)
            return cached
    entitlement = entitlement_build(customer_id=customer_id)
    _local.put(customer_id, entitlement)
    _shared_set(customer_id, entitlement, replace=fresh)
    return entitlement


def entitlement_current(*, customer_id: Any) -> Entitlement:
    """The customer's entitlement as the database has it now: the cached one when its
    version is still the current one (an indexed read), else rebuilt. For decisions that
    no reservation statement checks again, such as whether a feature is granted."""
    entitlement = entitlement_for(customer_id=customer_id)
    if entitlement_is_current(entitlement):
        return entitlement
    return entitlement_for(customer_id=customer_id, fresh=True)


def entitlement_is_current(entitlement: Entitlement) -> bool:
    return version_of(entitlement.customer_id) == entitlement.version


def version_of(customer_id: Any) -> int:
    version = (
        EntitlementVersion.objects.filter(customer_id=customer_id)
        .values_list("version", flat=True)
        .first()
    )
    return version or 0


def entitlement_build(*, customer_id: Any) -> Entitlement:
    """Build from the database (then apply the overrides a test set). The version is read
    first: a change that commits while the rest is read pairs newer rows with an older
    version, which the reservation then refuses as stale; the other order could pair old
    rows with a new version."""
    entitlement = _entitlement_build(customer_id=customer_id)
    # A plan first, then the quotas and features set on top of it, whatever the order.
    for override in sorted(_overrides, key=lambda override: override.plan is None):
        if override.customer_id is None or str(override.customer_id) == str(customer_id):
            entitlement = override.apply(entitlement)
    return entitlement


def _entitlement_build(*, customer_id: Any) -> Entitlement:
    version = version_of(customer_id)
    kit = (
        AccountKit.objects.prefetch_related("primitives")
        .filter(assignments__customer_id=customer_id)
        .first()
    )
    allowed = {p.primitive: p.rate_per_minute for p in kit.primitives.all()} if kit else None
    subscription = (
        Subscription.objects.select_related("plan")
        .prefetch_related("plan__quotas", "plan__features", "plan__credit_costs")
        .filter(customer_id=customer_id)
        .first()
    )
    if subscription is None:
        return Entitlement(
            customer_id=customer_id,
            version=version,
            period=billing_settings.DEFAULT_PERIOD,
            kit=allowed,
        )

    plan, inactive, grace_until = subscription.plan, None, None
    status = subscription.status
    if status == SubscriptionStatus.PAST_DUE:
        grace_until = subscription.status_changed_at + billing_settings.PAST_DUE_GRACE
    elif status not in USABLE_STATUSES:
        fallback = _fallback_plan()
        if fallback is None:
            inactive = (
                "The subscription has ended."
                if status in ENDED_STATUSES
                else f"The subscription is {status}."
            )
        else:
            plan = fallback
    seats = subscription.seats
    grants: dict[tuple[str, datetime], int] = {}
    for primitive, start, amount in QuotaGrant.objects.filter(
        customer_id=customer_id, window_end__gt=timezone.now()
    ).values_list("primitive", "window_start", "amount"):
        grants[(primitive, start)] = grants.get((primitive, start), 0) + amount
    return Entitlement(
        customer_id=customer_id,
        version=version,
        plan=plan.key,
        subscription_plan=subscription.plan.key,
        status=status,
        period=plan.period,
        anchor=subscription.billing_cycle_anchor,
        restart=subscription.usage_reset_at,
        quotas={q.primitive: _quota(q, seats) for q in plan.quotas.all() if q.kind == "counter"},
        gauges={q.primitive: _quota(q, seats) for q in plan.quotas.all() if q.kind == "gauge"},
        kit=allowed,
        features=frozenset(f.feature for f in plan.features.all()),
        seats=seats,
        inactive=inactive,
        grace_until=grace_until,
        grants=grants,
        credit_costs={cost.primitive: cost.credits for cost in plan.credit_costs.all()},
        spend_cap=plan.overage_spend_cap,
        auto_top_up_below=CreditAutoTopUp.objects.filter(customer_id=customer_id, active=True)
        .values_list("below", flat=True)
        .first(),
        **_credits_granted(customer_id),
    )


def _credits_granted(customer_id: Any) -> dict[str, Any]:
    row = (
        CreditBalance.objects.filter(customer_id=customer_id)
        .values_list("granted", "granted_since")
        .first()
    )
    if row is None:
        return {}
    return {"credits_granted": row[0], "credits_granted_since": row[1]}


def _quota(quota: PlanQuota, seats: int) -> Quota:
    billed = quota.overage == "bill"
    # A per-seat limit times the seats stops at what the counters hold (2^63 - 1).
    limit = min(quota.limit * seats, MAX_BIGINT) if quota.per_seat else quota.limit
    return Quota(limit, billed, quota.overage_unit_price if billed else None)


def _fallback_plan() -> Plan | None:
    key = billing_settings.FALLBACK_PLAN
    if not key:
        return None
    return (
        Plan.objects.prefetch_related("quotas", "features", "credit_costs").filter(key=key).first()
    )


# --- overrides, for tests (billing_app.testutils) --------------------------------------


@dataclass(frozen=True)
class EntitlementOverride:
    """A change to what one customer (``customer_id``), or every customer (None), gets:
    as if subscribed (active) to ``plan``; ``quotas`` set (None: unlimited); ``features``
    granted (True) or withdrawn (False). Kept in this process, like ``override_settings``,
    and applied where entitlements are built, so every reader sees it."""

    customer_id: Any = None
    plan: str | None = None
    quotas: Mapping[str, int | None] = field(default_factory=dict)
    features: Mapping[str, bool] = field(default_factory=dict)

    def apply(self, entitlement: Entitlement) -> Entitlement:
        from dataclasses import replace

        if self.plan is not None:
            entitlement = _as_subscribed(entitlement, self.plan)
        quotas = dict(entitlement.quotas)
        for primitive, limit in self.quotas.items():
            if limit is None:
                quotas.pop(primitive, None)
            else:
                known = quotas.get(primitive)
                quotas[primitive] = Quota(
                    limit, getattr(known, "billed", False), getattr(known, "price", None)
                )
        features = {f for f, on in self.features.items() if on}
        withdrawn = {f for f, on in self.features.items() if not on}
        return replace(
            entitlement,
            quotas=quotas,
            features=(entitlement.features | features) - withdrawn,
        )


def _as_subscribed(entitlement: Entitlement, plan_key: str) -> Entitlement:
    from dataclasses import replace

    plan = (
        Plan.objects.select_related("account_kit")
        .prefetch_related("quotas", "features", "account_kit__primitives")
        .filter(key=plan_key)
        .first()
    )
    if plan is None:
        raise BillingImproperlyConfigured(f"override_plan: there is no plan {plan_key!r}.")
    kit = entitlement.kit
    if plan.account_kit is not None:
        kit = {p.primitive: p.rate_per_minute for p in plan.account_kit.primitives.all()}
    seats = entitlement.seats
    return replace(
        entitlement,
        plan=plan.key,
        subscription_plan=plan.key,
        status=SubscriptionStatus.ACTIVE,
        period=plan.period,
        quotas={q.primitive: _quota(q, seats) for q in plan.quotas.all()},
        spend_cap=plan.overage_spend_cap,
        kit=kit,
        features=frozenset(f.feature for f in plan.features.all()),
        inactive=None,
        grace_until=None,
    )


_overrides: list[EntitlementOverride] = []


def entitlement_override_push(override: EntitlementOverride) -> None:
    """Apply ``override`` until it is popped, raising the versions it changes."""
    _overrides.append(override)
    _overrides_changed(override)


def entitlement_override_pop(override: EntitlementOverride) -> None:
    _overrides.remove(override)
    _overrides_changed(override)


def _overrides_changed(override: EntitlementOverride) -> None:
    from django.db import transaction

    from .conf import customer_model

    if override.customer_id is not None:
        customer_ids: Iterable[Any] = [override.customer_id]
    else:
        customer_ids = customer_model()._default_manager.values_list("pk", flat=True)
    with transaction.atomic():
        entitlements_changed(customer_ids=list(customer_ids))
    cache_clear()


# --- writing: the only writers of EntitlementVersion -----------------------------------


def entitlements_changed(*, customer_ids: Iterable[Any]) -> None:
    """Raise the version of these customers' entitlements. Call inside the transaction
    that changes what they may do."""
    ids = sorted(set(customer_ids), key=str)  # one lock order for concurrent changes
    if not ids:
        return
    table = EntitlementVersion._meta.db_table
    prep = customer_model()._meta.pk.get_db_prep_value  # the key column is the customer's
    rows = ", ".join(["(%s, 1)"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (customer_id, version) VALUES {rows} "
            f"ON CONFLICT (customer_id) DO UPDATE SET version = {table}.version + 1",
            [prep(pk, connection, prepared=False) for pk in ids],
        )


def entitlements_changed_for_plan(*, plan: Plan) -> None:
    """Everyone the plan applies to: its subscribers, and when it is the fallback plan,
    every customer whose subscription is not usable."""
    subscribers = Subscription.objects.filter(plan=plan)
    if plan.key == billing_settings.FALLBACK_PLAN:
        subscribers = Subscription.objects.exclude(status__in=USABLE_STATUSES) | subscribers
    _bump(subscribers.values("customer_id"))


def entitlements_changed_for_kit(*, kit: AccountKit) -> None:
    _bump(KitAssignment.objects.filter(kit=kit).values("customer_id"))


def _bump(customer_ids: Any) -> None:
    from django.db.models import F

    EntitlementVersion.objects.filter(customer_id__in=customer_ids).update(version=F("version") + 1)


# --- caches ------------------------------------------------------------------------------


class _LRU:
    """A bounded, thread-safe map of the most recently used entitlements of a process."""

    def __init__(self) -> None:
        self.entries: OrderedDict[Any, Entitlement] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Any) -> Entitlement | None:
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
            return entry

    def put(self, key: Any, value: Entitlement) -> None:
        with self.lock:
            self.entries[key] = value
            self.entries.move_to_end(key)
            while len(self.entries) > billing_settings.ENTITLEMENT_CACHE_SIZE:
                self.entries.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


_local = _LRU()


def cache_clear() -> None:
    """Forget this process's entitlements (tests, and after a restore of the database)."""
    _local.clear()


def _shared() -> Any:
    alias = billing_settings.CACHE
    if not alias:
        return None
    from django.core.cache import caches

    return caches[alias]


# Raised when the shape of Entitlement changes: a process of the new code must not read
# an entitlement that the old code cached (it would lack the new fields).
_CACHE_FORMAT = 2


def _cache_key(customer_id: Any) -> str:
    return f"billing:entitlement:v{_CACHE_FORMAT}:{customer_id}"


def _shared_get(customer_id: Any) -> Entitlement | None:
    cache = _shared()
    if cache is None:
        return None
    try:
        value = cache.get(_cache_key(customer_id))
    except Exception:  # a cache is an optimisation: down means ask the database
        logger.warning("Entitlement cache unavailable; reading the database.", exc_info=True)
        return None
    return value if isinstance(value, Entitlement) else None


def _shared_set(customer_id: Any, entitlement: Entitlement, *, replace: bool) -> None:
    cache = _shared()
    if cache is None:
        return
    timeout = billing_settings.ENTITLEMENT_CACHE_TIMEOUT
    try:
        if replace:
            cache.set(_cache_key(customer_id), entitlement, timeout)
        else:
            cache.add(_cache_key(customer_id), entitlement, timeout)
    except Exception:
        logger.warning("Entitlement cache unavailable; not stored.", exc_info=True)
