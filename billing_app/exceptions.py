"""Every error the app raises derives from :class:`BillingError`.

Domain errors also derive from the matching DRF exception, so a DRF view that lets one
escape answers with the right status and a body that names the field.
"""

from __future__ import annotations

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
