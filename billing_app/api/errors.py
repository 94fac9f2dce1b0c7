"""Domain errors to HTTP: one table, used by the DRF exception handler and by the
middleware alike."""

from __future__ import annotations

import re
from typing import Any

from django.http import JsonResponse
from rest_framework.response import Response
from rest_framework.views import exception_handler

from ..conf import billing_settings
from ..exceptions import (
    BillingError,
    CallRefused,
    Conflict,
    CustomerRequired,
    FeatureNotEnabled,
    InsufficientCredits,
    InvalidInput,
    NotFound,
    NotPermitted,
    PrimitiveNotAllowed,
    QuotaExceeded,
    RateLimited,
    StripeNotApplied,
    StripeUnavailable,
    SubscriptionInactive,
)

STATUS: dict[type[BillingError], int] = {
    InvalidInput: 400,
    CustomerRequired: 401,
    NotPermitted: 403,
    FeatureNotEnabled: 403,
    PrimitiveNotAllowed: 403,
    NotFound: 404,
    Conflict: 409,
    SubscriptionInactive: 402,
    InsufficientCredits: 402,
    RateLimited: 429,
    StripeNotApplied: 202,
    StripeUnavailable: 502,
}
WWW_AUTHENTICATE = 'Bearer realm="billing"'


def camel_case(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def snake_case(data: dict[str, Any]) -> dict[str, Any]:
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(): value for key, value in data.items()}


def status_of(error: BillingError) -> int:
    if isinstance(error, QuotaExceeded):
        return int(billing_settings.QUOTA_EXCEEDED_STATUS)
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 503


def body_of(error: BillingError) -> dict[str, Any]:
    if isinstance(error, InvalidInput):
        return {".".join(camel_case(p) for p in k.split(".")): v for k, v in error.fields.items()}
    if isinstance(error, CallRefused):
        code = error.code
        if isinstance(error, QuotaExceeded) and status_of(error) == 402:
            code = "usage_limit_exceeded"
        body: dict[str, Any] = {
            "error": code,
            "message": error.message,
            "primitive": error.primitive,
        }
        if error.limit is not None:
            body["usage"] = {"current": error.used, "limit": error.limit}
        if isinstance(error, InsufficientCredits):
            body["credits"] = {"balance": error.balance, "cost": error.cost}
        if error.resets_at is not None:
            body["resetsAt"] = error.resets_at.isoformat().replace("+00:00", "Z")
        return body
    if isinstance(error, FeatureNotEnabled):
        return {"error": error.code, "feature": error.feature, "message": error.message}
    body = {"detail": error.message}
    if isinstance(error, Conflict) and error.fields:
        body.update({camel_case(k): v for k, v in error.fields.items()})
    return body


def headers_of(error: BillingError) -> dict[str, str]:
    from ..metering.calls import refusal_headers

    if isinstance(error, CallRefused):
        return refusal_headers(error)
    if isinstance(error, CustomerRequired):
        return {"WWW-Authenticate": WWW_AUTHENTICATE}
    return {}


def json_response(error: BillingError) -> JsonResponse:
    response = JsonResponse(body_of(error), status=status_of(error))
    for name, value in headers_of(error).items():
        response[name] = value
    return response


def billing_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """The app's errors by the table above; DRF's own as DRF answers them, with field
    names as the client sent them (camelCase)."""
    if isinstance(exc, BillingError):
        from rest_framework.views import set_rollback

        set_rollback()
        return Response(body_of(exc), status=status_of(exc), headers=headers_of(exc))
    response = exception_handler(exc, context)
    if response is not None and response.status_code == 400 and isinstance(response.data, dict):
        response.data = {camel_case(k): v for k, v in response.data.items()}
    return response
