"""Reads about customers."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from ..conf import customer_model
from ..exceptions import NotFound
from ..models import AccountKit, KitAssignment


def customer_get(*, customer_id: Any) -> Any:
    """The customer with this id, or NotFound naming it: also for an id that cannot be a
    key of the customer model (``abc`` for an integer key, a malformed UUID)."""
    Customer = customer_model()
    try:
        pk = Customer._meta.pk.to_python(customer_id)
        return Customer._default_manager.get(pk=pk)
    except (Customer.DoesNotExist, ValidationError, ValueError, TypeError, OverflowError):
        raise NotFound(f"No customer with id {customer_id!r}.") from None


def kit_of(*, customer: Any) -> AccountKit | None:
    assignment = KitAssignment.objects.select_related("kit").filter(customer=customer).first()
    return assignment.kit if assignment else None


def is_active(customer: Any) -> bool:
    """A customer (or grantee) that is a deactivated user may not act."""
    return getattr(customer, "is_active", True) is not False
