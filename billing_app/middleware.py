from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse

from .api.authentication import bearer_authenticate
from .api.errors import json_response
from .exceptions import BillingError
from .metering.calls import UNMETERED_METHODS, call_start, succeeded


class QuotaMiddleware:
    """Enforces quotas on views decorated with ``@metered``.

    It also accepts ``Authorization: Bearer tk_...`` (a tenant token) and ``Bearer
    sk_...`` with ``X-Billing-Customer`` (an operator acting for a customer) on those views,
    as DRF views do. Put it after ``AuthenticationMiddleware``. DRF views use
    ``MeteredMixin`` instead: DRF authenticates inside the view, after middleware has run.
    The reservation is made here, before ``ATOMIC_REQUESTS`` opens the view's transaction,
    so it commits at once and a failed view refunds it.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        call = getattr(request, "billing_call", None)
        if call is not None:
            call.finish(succeeded=succeeded(response.status_code))
            for name, value in call.headers().items():
                response[name] = value
        return response

    def process_view(
        self, request: HttpRequest, view: Any, args: Any, kwargs: Any
    ) -> HttpResponse | None:
        metered = getattr(view, "billing_metered", None)
        if metered is None:
            return None
        request.billing_metered = True  # type: ignore[attr-defined]
        if request.method in UNMETERED_METHODS:
            return None
        try:
            bearer_authenticate(request)
            request.billing_call = call_start(  # type: ignore[attr-defined]
                request, primitive=metered.primitive, quantity=metered.quantity
            )
        except BillingError as error:
            return json_response(error)
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        call = getattr(request, "billing_call", None)
        if call is not None:
            call.finish(succeeded=False, raised=True)
