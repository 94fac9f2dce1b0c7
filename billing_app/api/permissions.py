from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from ..models import OperatorKey


class IsOperator(BasePermission):
    """An operator key, or a staff member signed in to the admin (for the browsable API).

    A tenant token is refused even when its user is staff: tokens act as tenants only.
    """

    message = "This endpoint needs an operator key."

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, OperatorKey):
            return True
        return request.auth is None and bool(getattr(request.user, "is_staff", False))
