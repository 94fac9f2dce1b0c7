from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.exceptions import APIException

from .api.authentication import OperatorKeyAuthentication, TenantTokenAuthentication
from .enforcement import meter, refusal_headers, succeeded
from .exceptions import CallRefused


class QuotaMiddleware:
    """Enforces quotas on views decorated with ``@metered``.

    It also accepts ``Authorization: Bearer tk_...`` (a tenant) and ``Bearer sk_...`` with
    ``X-Billing-User`` (an operator acting for a tenant) on those views, as DRF views do.
    Put it after ``AuthenticationMiddleware``. DRF views use ``MeteredMixin`` instead: DRF
    authenticates inside the view, after middleware has run.
    """

    authenticators = (OperatorKeyAuthentication(), TenantTokenAuthentication())

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
        try:
            self.authenticate(request)
            request.billing_call = meter(  # type: ignore[attr-defined]
                request, primitive=metered.primitive, quantity=metered.quantity
            )
        except APIException as error:
            return error_response(error)
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        call = getattr(request, "billing_call", None)
        if call is not None:
            call.finish(succeeded=False)

    def authenticate(self, request: HttpRequest) -> None:
        for authenticator in self.authenticators:
            found = authenticator.authenticate(request)  # type: ignore[arg-type]
            if found is not None:
                request.user, request.auth = found  # type: ignore[attr-defined]
                return


def error_response(error: APIException) -> JsonResponse:
    body = error.detail if isinstance(error.detail, dict) else {"detail": error.detail}
    response = JsonResponse(body, status=error.status_code)
    if isinstance(error, CallRefused):
        for name, value in refusal_headers(error).items():
            response[name] = value
    if error.status_code == 401:
        response["WWW-Authenticate"] = 'Bearer realm="billing"'
    return response
