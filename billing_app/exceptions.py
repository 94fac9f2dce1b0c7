"""Every error the app raises derives from :class:`BillingError`.

Domain errors also derive from the matching DRF exception, so a DRF view that lets one
escape answers with the right status and a body that names the field.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from rest_framework import exceptions, status


class BillingError(Exception):
    """Base class of the app's errors."""


class BillingImproperlyConfigured(BillingError, ImproperlyConfigured):
    pass


class InvalidInput(BillingError, exceptions.ValidationError):
    """Input a service refuses; ``detail`` maps each field to its messages."""


class NotFound(BillingError, exceptions.NotFound):
    pass


class Conflict(BillingError, exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class StripeUnavailable(BillingError, exceptions.APIException):
    """Stripe refused a request or could not be reached; nothing was changed here."""

    status_code = status.HTTP_502_BAD_GATEWAY
    default_code = "stripe_error"


class TenantRequired(BillingError, exceptions.NotAuthenticated):
    """A metered call that no tenant can be charged for."""


class CallRefused(BillingError, exceptions.APIException):
    """A metered call refused before it ran. ``detail`` is the JSON body as the contracts
    give it (``{"error": "rate_limited", "message": ..., "primitive": ..., ...}``); a DRF
    view that lets it escape answers with that body, its status and ``Retry-After``."""

    error = "refused"

    def __init__(self, message: str, *, primitive: str, wait: int | None = None, **extra: Any):
        super().__init__(message)
        self.wait = wait  # DRF's exception handler turns it into Retry-After.
        # Set after __init__: DRF would turn every number in the body into a string.
        self.detail = {"error": self.error, "message": message, "primitive": primitive, **extra}


class PrimitiveNotAllowed(CallRefused):
    status_code = status.HTTP_403_FORBIDDEN
    error = "primitive_not_allowed"


class SubscriptionInactive(CallRefused):
    status_code = status.HTTP_402_PAYMENT_REQUIRED
    error = "subscription_inactive"


class RateLimited(CallRefused):
    """Over the kit's calls per minute."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    error = "rate_limited"


class QuotaExceeded(CallRefused):
    """Over the plan's quota for the window; the status is BILLING_QUOTA_EXCEEDED_STATUS."""

    error = "rate_limited"

    def __init__(self, message: str, *, status_code: int, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.status_code = status_code
