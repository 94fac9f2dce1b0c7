"""Every error the app raises derives from :class:`BillingError`.

Domain errors know nothing of HTTP: ``billing_app.api.errors`` maps each to a status and a
body, for DRF views (their exception handler) and for the middleware alike.
"""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ImproperlyConfigured


class BillingError(Exception):
    """Base class of the app's errors."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class BillingImproperlyConfigured(BillingError, ImproperlyConfigured):
    pass


class InvalidInput(BillingError):
    """Input a service refuses. ``fields`` maps each argument, by the name the service
    takes, to its messages; the API renders the names as the client sent them."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in fields.items()))
        self.fields = fields


class NotFound(BillingError):
    pass


class Conflict(BillingError):
    """The request conflicts with the current state (a seat past the count, a key reused
    with another body, nothing to cancel)."""

    def __init__(self, message: str, *, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.fields = fields


class StripeUnavailable(BillingError):
    """Stripe refused a request or could not be reached; nothing was changed here."""


class StripeNotApplied(BillingError):
    """Stripe accepted a change that could not be applied here yet; it is recorded and
    the next sync applies it."""


class CustomerRequired(BillingError):
    """A request that no customer can be found for (no credentials)."""


class NotPermitted(BillingError):
    """The caller may not do this (acting for another customer, say)."""


class FeatureNotEnabled(BillingError):
    """The customer's plan does not grant ``feature`` (or the subscription is not usable)."""

    code = "feature_not_enabled"

    def __init__(self, message: str, *, feature: str) -> None:
        super().__init__(message)
        self.feature = feature


class CallRefused(BillingError):
    """A metered call refused before it ran: ``code`` is the machine-readable reason. A
    refusal over a limit carries the limit, the usage it found, when the window resets
    and how long it is (for the RateLimit headers), and ``wait``, the seconds until a
    retry can succeed."""

    code = "refused"

    def __init__(
        self,
        message: str,
        *,
        primitive: str,
        limit: int | None = None,
        used: int | None = None,
        resets_at: datetime | None = None,
        window_seconds: int | None = None,
        wait: int | None = None,
    ) -> None:
        super().__init__(message)
        self.primitive = primitive
        self.limit = limit
        self.used = used
        self.resets_at = resets_at
        self.window_seconds = window_seconds
        self.wait = wait


class PrimitiveNotAllowed(CallRefused):
    """The primitive is not in the customer's Account Kit."""

    code = "primitive_not_allowed"


class SubscriptionInactive(CallRefused):
    """The subscription is canceled, unpaid, ... and there is no fallback plan."""

    code = "subscription_inactive"


class RateLimited(CallRefused):
    """Over the kit's calls per minute."""

    code = "too_many_requests"


class InsufficientCredits(CallRefused):
    """The call costs more credits than the customer has."""

    code = "insufficient_credits"

    def __init__(self, message: str, *, primitive: str, balance: int, cost: int) -> None:
        super().__init__(message, primitive=primitive)
        self.balance = balance
        self.cost = cost


class QuotaExceeded(CallRefused):
    """Over the plan's quota for the window."""

    code = "rate_limited"
