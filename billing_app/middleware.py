from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse

from .api.authentication import bearer_authenticate
from .api.errors import json_response
from .exceptions import BillingError
from .metering.calls import (
    MeteredCall,
    call_start,
    headers_add,
    method_is_metered,
    path_call_start,
    path_primitive,
    succeeded,
)


class QuotaMiddleware:
    """Enforces quotas on views decorated with ``@metered``, and counts every request
    under the paths of ``BILLING_METERED_PATHS`` on their primitive, whatever the view
    (except views marked ``@unmetered``): the same reservation, refusals and headers.

    A request is counted once on its path's primitive; a ``@metered`` view under it
    counts its own primitive as well (or, when that is the path's primitive, counts it
    once, by the view's quantity). A request under a counted path that carries no
    credentials is let through uncounted: its view decides whether it may run without a
    customer. Credentials that name no customer the request may act for are refused.

    It also accepts ``Authorization: Bearer tk_...`` (a tenant token) and ``Bearer
    sk_...`` with ``X-Billing-Customer`` (an operator acting for a customer) on those views,
    as DRF views do. Put it after ``AuthenticationMiddleware``. DRF views use
    ``MeteredMixin`` for their own primitive: DRF authenticates inside the view, after
    middleware has run. The reservations are made here, before ``ATOMIC_REQUESTS`` opens
    the view's transaction, so they commit at once and a failed view refunds them.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        for call in getattr(request, "billing_calls", ()):
            call.finish(succeeded=succeeded(response.status_code))
            headers_add(response, call.headers())
        return response

    def process_view(
        self, request: HttpRequest, view: Any, args: Any, kwargs: Any
    ) -> HttpResponse | None:
        metered = getattr(view, "billing_metered", None)
        counted = None if _unmetered(view) else path_primitive(request)
        if metered is None and counted is None:
            return None
        if metered is not None:
            request.billing_metered = True  # type: ignore[attr-defined]
        if not method_is_metered(_view_class(view), request.method):
            return None
        calls: list[MeteredCall] = []
        try:
            bearer_authenticate(request)
            if counted is not None and (metered is None or metered.primitive != counted):
                call = path_call_start(request, primitive=counted)
                if call is not None:
                    calls.append(call)
            if metered is not None:
                calls.append(
                    call_start(request, primitive=metered.primitive, quantity=metered.quantity)
                )
        except BillingError as error:
            for call in calls:
                call.finish(succeeded=False)
            return json_response(error)
        request.billing_calls = calls  # type: ignore[attr-defined]
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        for call in getattr(request, "billing_calls", ()):
            call.finish(succeeded=False, raised=True)


def _view_class(view: Any) -> Any:
    """The class of a class-based view (DRF's viewsets keep it as ``cls``); None for a
    function view."""
    return getattr(view, "cls", None) or getattr(view, "view_class", None)


def _unmetered(view: Any) -> bool:
    """``@unmetered`` on a function view, or on the class of a class-based one."""
    owner = _view_class(view)
    return bool(
        getattr(view, "billing_unmetered", False) or getattr(owner, "billing_unmetered", False)
    )
