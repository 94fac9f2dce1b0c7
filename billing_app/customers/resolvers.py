"""From a request to the customer it is billed to.

``BILLING_CUSTOMER_RESOLVER`` names a callable(request) -> customer or None; the
middleware, the DRF mixin and the self-service API all call :func:`resolve_customer`,
which calls it. The default:

- a tenant token acts for the customer it was issued to;
- an operator key acts for the customer it names in ``X-Billing-Customer`` (or the
  seeds' ``X-Billing-User``);
- a signed-in user is the customer when customers are users; otherwise the user acts for
  the customer whose seat it holds (naming it in ``X-Billing-Customer`` when it holds
  several).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.utils.module_loading import import_string

from ..conf import billing_settings, customer_is_user
from ..exceptions import CustomerRequired, NotPermitted
from ..models import OperatorKey, Seat, TenantToken
from .selectors import customer_get


def named_customer(request: Any) -> str | None:
    headers = request.headers
    return headers.get("X-Billing-Customer") or headers.get("X-Billing-User") or None


def default_customer_resolver(request: Any) -> Any:
    auth = getattr(request, "auth", None)
    named = named_customer(request)
    if isinstance(auth, OperatorKey):
        if not named:
            raise CustomerRequired(
                "An operator key must name the customer it acts for in X-Billing-Customer."
            )
        return customer_get(customer_id=named)
    if isinstance(auth, TenantToken):
        if named and named != str(auth.customer_id):
            raise NotPermitted("A tenant token acts for its own customer only.")
        return auth.customer
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    if customer_is_user():
        if named and named != str(user.pk):
            raise NotPermitted("Only an operator key may act for another customer.")
        return user
    held = Seat.objects.filter(grantee=user).exclude(subscription__status__in=["canceled"])
    customers = {
        seat.subscription.customer_id: seat for seat in held.select_related("subscription")
    }
    if named:
        for customer_id, seat in customers.items():
            if str(customer_id) == named:
                return seat.subscription.customer
        raise NotPermitted("You hold no seat of that customer.")
    if len(customers) == 1:
        return next(iter(customers.values())).subscription.customer
    if customers:
        raise CustomerRequired(
            "You hold seats of several customers: name one in X-Billing-Customer."
        )
    return None


@lru_cache(maxsize=8)
def _resolver(path: str) -> Any:
    return import_string(path)


def customer_of(request: Any) -> Any:
    """The customer of ``request``, by ``BILLING_CUSTOMER_RESOLVER``, or None when the
    request has no credentials that name one."""
    return _resolver(billing_settings.CUSTOMER_RESOLVER)(request)


def resolve_customer(request: Any) -> Any:
    """The customer of ``request``, by ``BILLING_CUSTOMER_RESOLVER``; CustomerRequired when
    there is none."""
    customer = customer_of(request)
    if customer is None:
        raise CustomerRequired("This request needs an authenticated customer.")
    return customer
