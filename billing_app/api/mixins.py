from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import set_rollback

from ..exceptions import BillingError
from ..metering.calls import (
    MeteredCall,
    Quantity,
    call_start,
    counted_once,
    headers_add,
    method_is_metered,
    succeeded,
)
from .authentication import OperatorKeyAuthentication, TenantTokenAuthentication
from .errors import body_of, headers_of, status_of


class MeteredMixin:
    """Meters a DRF view or viewset. Put it first among the bases::

        class ReportViewSet(MeteredMixin, viewsets.ModelViewSet):
            metered = {"create": "seo", "retrieve": "seo"}  # per action; or metered = "seo"
            metered_quantity = 1  # or a callable of the request

    The quota is reserved after DRF has authenticated the request and checked its
    permissions, so every DRF authentication scheme works; tenant tokens and operator
    keys (``Authorization: Bearer ...``) work without listing them. A HEAD is metered as
    the GET it runs; an OPTIONS answered by DRF's own ``options()`` is not.
    """

    metered: str | Mapping[str, str] | None = None
    metered_quantity: Quantity = 1
    billing_call: MeteredCall | None = None

    def get_authenticators(self) -> list[Any]:
        authenticators = list(super().get_authenticators())  # type: ignore[misc]
        for kind in (TenantTokenAuthentication, OperatorKeyAuthentication):
            if not any(isinstance(a, kind) for a in authenticators):
                authenticators.insert(0, kind())
        return authenticators

    def metered_primitive(self, request: Request) -> str | None:
        if not method_is_metered(type(self), request.method):
            return None
        if isinstance(self.metered, Mapping):
            action = getattr(self, "action", None) or (request.method or "").lower()
            if action == "head" and "head" not in self.metered:
                action = "get"  # a HEAD runs the GET handler
            return self.metered.get(action)
        return self.metered

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        primitive = self.metered_primitive(request)
        # Under a path counted on the same primitive, the request is counted once already.
        if primitive and not counted_once(request, primitive):
            # Read unbound: a function set on the class would otherwise get ``self``.
            quantity = inspect.getattr_static(self, "metered_quantity")
            if isinstance(quantity, staticmethod):
                quantity = quantity.__func__
            self.billing_call = call_start(request, primitive=primitive, quantity=quantity)

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        self.billing_call = None
        try:
            response: Response = super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
        except BaseException:
            if self.billing_call is not None:
                self.billing_call.finish(succeeded=False, raised=True)
            raise
        if self.billing_call is not None:
            self.billing_call.finish(succeeded=succeeded(response.status_code))
            headers_add(response, self.billing_call.headers())
        return response

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, BillingError):
            # Whatever exception handler the host's DRF settings name, the app's errors
            # answer as the app's endpoints answer them.
            set_rollback()
            return Response(body_of(exc), status=status_of(exc), headers=headers_of(exc))
        return super().handle_exception(exc)  # type: ignore[misc]
