from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from ..models import OperatorKey

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
