from __future__ import annotations

from functools import cache
from typing import Any

from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from ..exceptions import (
    BillingImproperlyConfigured,
    CustomerRequired,
    FeatureNotEnabled,
    InvalidInput,
    NotFound,
    NotPermitted,
)
from ..features import feature_check
from ..models import OperatorKey
from ..validation import check_feature
from .errors import body_of

OPERATE = "billing_app.operate"


class IsOperator(BasePermission):
    """An operator key, or a user signed in with the ``billing_app.operate`` permission
    (for the browsable API). Being staff is not enough: privilege is explicit. A tenant
    token is refused whoever it names: tokens act as customers only."""

    message = "This endpoint needs an operator key (or the billing_app.operate permission)."

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, OperatorKey):
            return True
        user = request.user
        return request.auth is None and bool(
            user and user.is_authenticated and user.has_perm(OPERATE)
        )


class FeaturePermission(BasePermission):
    """Grants the request when its customer's plan grants ``feature``. Use
    :func:`HasFeature`, which makes one per feature."""

    feature: str

    def has_permission(self, request: Request, view: Any) -> bool:
        try:
            feature_check(request, self.feature)
        except FeatureNotEnabled as error:
            # DRF answers 403 with this body as it is.
            self.message: Any = body_of(error)
            return False
        except (CustomerRequired, NotPermitted) as error:
            # Unauthenticated: DRF answers NotAuthenticated, as for IsAuthenticated.
            self.message = error.message
            return False
        except NotFound as error:  # an operator key naming no customer
            raise exceptions.NotFound(error.message) from None
        return True


@cache
def HasFeature(feature: str) -> type[FeaturePermission]:
    """A DRF permission class for ``feature``::

        class ExportView(APIView):
            permission_classes = [HasFeature("csv-export")]

    Refused: 403 ``{"error": "feature_not_enabled", "feature": ..., "message": ...}``; no
    customer: DRF's ``NotAuthenticated`` (401 with ``WWW-Authenticate`` when the view's
    first authentication class names a scheme, else 403), as ``IsAuthenticated`` answers.
    It composes with ``&``, ``|`` and ``~`` like any permission class."""
    try:
        check_feature("feature", feature)
    except InvalidInput as error:
        raise BillingImproperlyConfigured(f"HasFeature: {error.fields['feature'][0]}") from None
    return type(f"HasFeature[{feature}]", (FeaturePermission,), {"feature": feature})
