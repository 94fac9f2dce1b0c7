"""Gating beyond metering: may this customer use a feature, and how much of a primitive
has it left. One decision, several entry points (as django-waffle's ``flag_is_active``):
``@requires_feature`` (``decorators``), ``HasFeature`` (DRF, ``api.permissions``), the
``{% feature %}`` and ``{% usage %}`` template tags (``templatetags.billing``) and the
Jinja2 globals (``jinja``) all call :func:`feature_check` and :func:`usage_of`.

``who`` is a request (its customer comes from ``BILLING_CUSTOMER_RESOLVER``) or a customer
(a row of ``BILLING_CUSTOMER_MODEL``). Everything here only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Model
from django.utils import timezone

from .customers.resolvers import resolve_customer
from .entitlements import Entitlement, entitlement_current
from .exceptions import CustomerRequired, FeatureNotEnabled, NotFound, NotPermitted
from .metering.selectors import UsageRollup, usage_rollup

# A request's customer cannot be found: it has none, may not act for the one it names,
# or names one that does not exist.
NO_CUSTOMER = (CustomerRequired, NotPermitted, NotFound)

# What a request has resolved already, so that a page with ten {% feature %} tags
# resolves its customer and reads its entitlement once.
_MEMO = "_billing_gating"


@dataclass(frozen=True)
class Usage:
    """One primitive's usage in the customer's current quota window, as enforced.
    ``limit`` and ``remaining`` are None when the primitive is unlimited."""

    primitive: str
    used: int
    limit: int | None
    resets_at: datetime
    window_start: datetime

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.used)

    @property
    def unlimited(self) -> bool:
        return self.limit is None

    @property
    def exceeded(self) -> bool:
        return self.limit is not None and self.used >= self.limit

    @property
    def percent(self) -> int:
        """Share of the limit used, 0 to 100 (0 when unlimited), for a bar."""
        if self.limit is None:
            return 0
        if self.limit == 0:
            return 100
        return min(100, round(100 * self.used / self.limit))


def customer_of(who: Any) -> Any:
    """The customer ``who`` is or acts for; one of ``NO_CUSTOMER`` when a request has
    none, may not act for the one it names, or names one that does not exist."""
    if isinstance(who, Model):
        return who
    if not hasattr(who, "META"):  # an anonymous user, None: nobody to bill
        raise CustomerRequired("This needs a customer or a request.")
    memo = _memo(who)
    if "customer" not in memo:
        memo["customer"] = resolve_customer(who)
    return memo["customer"]


def feature_check(who: Any, feature: str) -> None:
    """The decision: returns when ``who``'s plan in force grants ``feature`` now, raises
    ``FeatureNotEnabled`` when it does not (or the subscription is not usable), and the
    resolver's errors (``NO_CUSTOMER``) for a request without a customer.

    It reads the entitlement enforcement uses, confirmed current by its version, so a
    plan change binds on the next request in every process."""
    entitlement = _entitlement(who)
    now = timezone.now()
    if entitlement.has_feature(feature, now):
        return
    reason = entitlement.inactive_reason(now)
    if reason is None:
        reason = f"Your plan does not include {feature}."
    raise FeatureNotEnabled(reason, feature=feature)


def feature_is_active(who: Any, feature: str) -> bool:
    """:func:`feature_check` as a boolean: no customer means no feature."""
    try:
        feature_check(who, feature)
    except (FeatureNotEnabled, *NO_CUSTOMER):
        return False
    return True


def usage_of(who: Any, primitive: str) -> Usage | None:
    """``primitive``'s usage in ``who``'s current window, read from the rollup the usage
    endpoints and the admin show (the enforced quota, grants included); None when ``who``
    is a request without a customer."""
    try:
        rollup = _rollup(who)
    except NO_CUSTOMER:
        return None
    return Usage(
        primitive=primitive,
        used=rollup.usage.get(primitive, 0),
        limit=rollup.quotas.get(primitive),
        resets_at=rollup.window.end,
        window_start=rollup.window.start,
    )


def _entitlement(who: Any) -> Entitlement:
    customer = customer_of(who)
    if isinstance(who, Model):
        return entitlement_current(customer_id=customer.pk)
    memo = _memo(who)
    if "entitlement" not in memo:
        rollup = memo.get("rollup")
        memo["entitlement"] = (
            rollup.entitlement if rollup else entitlement_current(customer_id=customer.pk)
        )
    entitlement: Entitlement = memo["entitlement"]
    return entitlement


def _rollup(who: Any) -> UsageRollup:
    customer = customer_of(who)
    if isinstance(who, Model):
        return usage_rollup(customer_id=customer.pk)
    memo = _memo(who)
    if "rollup" not in memo:
        memo["rollup"] = usage_rollup(customer_id=customer.pk)
    rollup: UsageRollup = memo["rollup"]
    return rollup


def _memo(request: Any) -> dict[str, Any]:
    # On the object itself: a DRF Request would otherwise hand out the memo of the Django
    # request it wraps, made before DRF authenticated it.
    memo: dict[str, Any] = vars(request).setdefault(_MEMO, {})
    return memo
