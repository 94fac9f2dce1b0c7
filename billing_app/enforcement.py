"""The one place that turns a request into reserve, then keep or refund.

Every entry point (the middleware with ``@metered`` views, the DRF mixin, the usage API)
calls :func:`meter` before the work and :meth:`MeteredCall.finish` after it. The checks run
in this order: Account Kit (403), subscription status (402), kit rate limit (429), quota
(``BILLING_QUOTA_EXCEEDED_STATUS``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.module_loading import import_string
from django_ratelimit.core import get_usage
from rest_framework.exceptions import PermissionDenied

from . import alerts, selectors, services
from .conf import billing_settings
from .exceptions import (
    CallRefused,
    InvalidInput,
    PrimitiveNotAllowed,
    QuotaExceeded,
    RateLimited,
    SubscriptionInactive,
    TenantRequired,
)
from .models import OperatorKey
from .periods import Window
from .selectors import Entitlement

Quantity = int | Callable[[Any], int]


def default_tenant_resolver(request: Any) -> Any:
    """The signed-in tenant, or the tenant an operator key names in ``X-Billing-User``."""
    acting_for = request.headers.get("X-Billing-User")
    if isinstance(getattr(request, "auth", None), OperatorKey):
        if not acting_for:
            raise TenantRequired(
                "An operator key must name the tenant it acts for in X-Billing-User."
            )
        return selectors.tenant_get(user_id=acting_for)
    if acting_for:
        raise PermissionDenied("Only an operator key may act for a tenant (X-Billing-User).")
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


def resolve_tenant(request: Any) -> Any:
    user = import_string(billing_settings.TENANT_RESOLVER)(request)
    if user is None:
        raise TenantRequired("A metered call needs an authenticated tenant.")
    return user


@dataclass
class MeteredCall:
    primitive: str
    reservation: services.Reservation
    settled: bool = False

    def finish(self, *, succeeded: bool) -> None:
        """Keep the usage of a call that succeeded; refund one that failed. Once."""
        if self.settled:
            return
        self.settled = True
        if not succeeded:
            services.usage_refund(reservation=self.reservation)

    def headers(self) -> dict[str, str]:
        reservation = self.reservation
        if reservation.limit is None:
            return {}
        return quota_headers(
            primitive=self.primitive,
            limit=reservation.limit,
            used=reservation.used,
            window=reservation.window,
        )


def quota_headers(*, primitive: str, limit: int, used: int, window: Window) -> dict[str, str]:
    """The IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers-09)."""
    now = timezone.now()
    width = int((window.end - window.start).total_seconds())
    reset = max(0, math.ceil((window.end - now).total_seconds()))
    return {
        "RateLimit-Policy": f'"{primitive}";q={limit};w={width}',
        "RateLimit": f'"{primitive}";r={max(0, limit - used)};t={reset}',
    }


def admit(*, entitlement: Entitlement, primitive: str, at: datetime, rate: str = "count") -> None:
    """The checks that come before the quota: kit, subscription status, kit rate limit.

    Raises the matching ``CallRefused``. ``rate`` is "count" (the call counts towards the
    per-minute limit), "peek" (the limit is only read, for ``check``) or "ignore".
    """
    kit = entitlement.kit
    if kit is not None and primitive not in kit:
        raise PrimitiveNotAllowed(
            f"{primitive} is not in this tenant's Account Kit.", primitive=primitive
        )
    inactive = entitlement.inactive_reason(at)
    if inactive:
        raise SubscriptionInactive(inactive, primitive=primitive)
    per_minute = kit.get(primitive) if kit else None
    if per_minute is not None and rate != "ignore":
        counting = rate == "count"
        usage = get_usage(
            None,
            group=f"billing:{primitive}",
            key=lambda group, request: str(entitlement.user_id),
            rate=f"{per_minute}/m",
            increment=counting,
        )
        if usage["should_limit"] if counting else usage["count"] >= per_minute:
            raise RateLimited(
                f"More than {per_minute} calls of {primitive} per minute.",
                primitive=primitive,
                wait=max(1, usage["time_left"]),
                usage={"current": usage["count"], "limit": per_minute},
            )


def quota_refusal(
    *, entitlement: Entitlement, primitive: str, used: int, limit: int, window: Window
) -> QuotaExceeded:
    return QuotaExceeded(
        f"The {primitive} quota for this {entitlement.period} ({limit}) is used up.",
        status_code=billing_settings.QUOTA_EXCEEDED_STATUS,
        primitive=primitive,
        usage={"current": used, "limit": limit},
        resetsAt=window.end.isoformat().replace("+00:00", "Z"),
        wait=max(1, math.ceil((window.end - timezone.now()).total_seconds())),
    )


def meter(request: Any, *, primitive: str, quantity: Quantity = 1) -> MeteredCall:
    """Decide and reserve a metered call of ``request``; raises ``CallRefused`` (or
    ``TenantRequired``) when it may not run. The caller runs the work, then ``finish``."""
    user = resolve_tenant(request)
    amount = quantity(request) if callable(quantity) else quantity
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
        raise InvalidInput(
            {"quantity": [f"A quantity must be a positive integer, not {amount!r}."]}
        )
    at = timezone.now()
    entitlement = selectors.entitlement_for(user_id=user.pk)
    admit(entitlement=entitlement, primitive=primitive, at=at)
    limit = entitlement.quotas.get(primitive) if entitlement.limited else None
    reservation = _reserve(
        entitlement=entitlement, primitive=primitive, quantity=amount, at=at, limit=limit
    )
    return MeteredCall(primitive=primitive, reservation=reservation)


def _reserve(
    *,
    entitlement: Entitlement,
    primitive: str,
    quantity: int,
    at: datetime,
    limit: int | None,
    **idempotency: str,
) -> services.Reservation:
    """Reserve in the window of ``at``; over ``limit`` becomes the contract's refusal."""
    window = entitlement.window(at)
    try:
        reservation = services.usage_reserve(
            user_id=entitlement.user_id,
            primitive=primitive,
            quantity=quantity,
            window=window,
            limit=limit,
            occurred_at=at,
            soft=primitive in entitlement.billed,
            **idempotency,
        )
    except services.UsageRefused as refused:
        assert limit is not None
        raise quota_refusal(
            entitlement=entitlement,
            primitive=primitive,
            used=refused.used,
            limit=limit,
            window=window,
        ) from None
    if not reservation.duplicate:
        alerts.note(
            user_id=reservation.user_id,
            primitive=primitive,
            window=reservation.window,
            before=reservation.used - quantity,
            after=reservation.used,
            limit=entitlement.quotas.get(primitive) if entitlement.limited else None,
        )
    return reservation


def refusal_headers(error: CallRefused) -> dict[str, str]:
    headers = {}
    if error.wait:
        headers["Retry-After"] = str(error.wait)
    usage = error.detail.get("usage") if isinstance(error.detail, dict) else None
    if isinstance(error, QuotaExceeded) and usage:
        headers["RateLimit"] = f'"{error.detail["primitive"]}";r=0;t={error.wait}'
    return headers


def succeeded(status_code: int) -> bool:
    return 200 <= status_code < 400


FUTURE_TOLERANCE = timedelta(minutes=5)


def record(
    *,
    user: Any,
    primitive: str,
    quantity: int,
    idempotency_key: str = "",
    timestamp: datetime | None = None,
    enforce: bool = True,
) -> services.Reservation:
    """Record usage reported through the API, in the window ``timestamp`` falls in.

    With ``enforce`` it is refused as a metered call would be (kit, status, quota; not the
    per-minute rate, which is about live calls); without, it is recorded even past the
    quota (overage). A known idempotency key answers the first result.
    """
    now = timezone.now()
    at = timestamp or now
    if at < now - billing_settings.LATE_USAGE_WINDOW:
        raise InvalidInput(
            {"timestamp": [f"Usage older than {billing_settings.LATE_USAGE_WINDOW} is refused."]}
        )
    if at > now + FUTURE_TOLERANCE:
        raise InvalidInput({"timestamp": ["Usage may not be more than 5 minutes ahead."]})
    entitlement = selectors.entitlement_for(user_id=user.pk)
    quota = entitlement.quotas.get(primitive) if entitlement.limited else None
    limit = quota if enforce else None
    if enforce:
        admit(entitlement=entitlement, primitive=primitive, at=now, rate="ignore")
    reservation = _reserve(
        entitlement=entitlement,
        primitive=primitive,
        quantity=quantity,
        at=at,
        limit=limit,
        idempotency_key=idempotency_key,
        fingerprint=_fingerprint(primitive, quantity, timestamp.isoformat() if timestamp else None),
    )
    # Unenforced usage still reports the quota it is measured against.
    return dataclasses.replace(reservation, limit=quota)


@dataclass(frozen=True)
class Check:
    allowed: bool
    reason: str | None
    limit: int | None
    used: int
    remaining: int | None
    resets_at: datetime


def check(*, user: Any, primitive: str, quantity: int = 1) -> Check:
    """Would a call of ``quantity`` be admitted now? Consumes nothing."""
    now = timezone.now()
    entitlement = selectors.entitlement_for(user_id=user.pk)
    window = entitlement.window(now)
    used = services.usage_used(user_id=user.pk, primitive=primitive, window=window)
    limit = entitlement.quotas.get(primitive) if entitlement.limited else None
    remaining = None if limit is None else max(0, limit - used)
    reason = None
    try:
        admit(entitlement=entitlement, primitive=primitive, at=now, rate="peek")
    except CallRefused as refused:
        reason = refused.error
    soft = primitive in entitlement.billed
    if reason is None and remaining is not None and quantity > remaining and not soft:
        reason = "rate_limited"
    return Check(reason is None, reason, limit, used, remaining, window.end)


BATCH_LIMIT = 1000
_PRIMITIVE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")


def ingest(*, events: list[Any]) -> list[dict[str, Any]]:
    """Record a batch of reported usage (``POST /v1/usage/events``): one result per event,
    in order. A bad event fails alone with its field errors; the good ones land together.
    Validated by hand rather than with a serializer per event: this is the bulk path."""
    now = timezone.now()
    # Only true integers: in a set, 1.0 or True would stand for (and hide) a good 1.
    user_ids = {e["userId"] for e in events if isinstance(e, dict) and type(e.get("userId")) is int}
    known_users = set(
        get_user_model()._default_manager.filter(pk__in=user_ids).values_list("pk", flat=True)
    )
    # One entitlement per tenant and one window per tenant and window, not per event: the
    # windows of an entitlement partition time, so the last one found answers every
    # instant it contains.
    entitlements: dict[Any, Entitlement] = {}
    windows: dict[Any, Window] = {}

    def window_of(user_id: Any, at: datetime) -> Window:
        window = windows.get(user_id)
        if window is None or at not in window:
            entitlement = entitlements.get(user_id)
            if entitlement is None:
                entitlement = entitlements[user_id] = selectors.entitlement_for(user_id=user_id)
            window = windows[user_id] = entitlement.window(at)
        return window

    parsed: list[services.IngestItem | dict[str, list[str]]] = [
        _ingest_item(event, now=now, known_users=known_users, window_of=window_of)
        for event in events
    ]
    items = [item for item in parsed if isinstance(item, services.IngestItem)]
    # The quotas the batch's counters are measured against, for usage alerts.
    limits = {
        (user_id, primitive): entitlements[user_id].quotas.get(primitive)
        for user_id, primitive in {(item.user_id, item.primitive) for item in items}
        if entitlements[user_id].limited
    }
    outcomes = iter(services.usage_ingest(items=items, limits=limits))
    results = []
    for index, item in enumerate(parsed):
        if isinstance(item, dict):
            results.append({"index": index, "status": "invalid", "errors": item})
            continue
        outcome, event_id = next(outcomes)
        result: dict[str, Any] = {"index": index, "status": outcome, "id": event_id}
        if outcome == "conflict":
            result["errors"] = {"idempotencyKey": ["Used before with a different event."]}
        results.append(result)
    return results


def _ingest_item(
    event: Any,
    *,
    now: datetime,
    known_users: set[Any],
    window_of: Callable[[Any, datetime], Window],
) -> services.IngestItem | dict[str, list[str]]:
    if not isinstance(event, dict):
        return {"event": ["An event is a JSON object."]}
    errors: dict[str, list[str]] = {}
    user_id, primitive = event.get("userId"), event.get("primitive")
    quantity, key = event.get("quantity", 1), event.get("idempotencyKey") or ""
    # Only integer ids were looked up; a bool or a float would pass the set test by
    # equality (True == 1, 1.0 == 1) and reach the insert with the wrong type.
    if type(user_id) is not int or user_id not in known_users:
        errors["userId"] = [f"No user with id {user_id!r}."]
    if not isinstance(primitive, str) or not _PRIMITIVE.match(primitive):
        errors["primitive"] = ["A primitive is a slug such as 'seo' or 'email.send'."]
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 0 < quantity < 2**63:
        errors["quantity"] = ["A quantity is a positive integer."]
    if not isinstance(key, str) or len(key) > 255:
        errors["idempotencyKey"] = ["An idempotency key is a string of at most 255 characters."]
    raw_time = event.get("timestamp")
    at = now
    if raw_time is not None:
        parsed = parse_datetime(raw_time) if isinstance(raw_time, str) else None
        if parsed is None or parsed.tzinfo is None:
            errors["timestamp"] = ["An ISO 8601 date-time with a time zone."]
        elif not now - billing_settings.LATE_USAGE_WINDOW <= parsed <= now + FUTURE_TOLERANCE:
            errors["timestamp"] = ["Outside the late-usage window or in the future."]
        else:
            at = parsed
    if errors:
        return errors
    return services.IngestItem(
        user_id=user_id,
        primitive=primitive,
        quantity=quantity,
        occurred_at=at,
        window=window_of(user_id, at),
        idempotency_key=key,
        fingerprint=_fingerprint(primitive, quantity, raw_time),
    )


def _fingerprint(primitive: str, quantity: int, timestamp: Any) -> str:
    return hashlib.sha256(f"{primitive}|{quantity}|{timestamp or ''}".encode()).hexdigest()
