from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .api.authentication import bearer_authenticate
from .api.errors import json_response
from .exceptions import (
    BillingImproperlyConfigured,
    CustomerRequired,
    FeatureNotEnabled,
    InvalidInput,
    NotFound,
)
from .features import NO_CUSTOMER, feature_check
from .validation import check_feature

MIDDLEWARE = "billing_app.middleware.QuotaMiddleware"
FEATURE_TEMPLATE = "billing_app/feature_not_enabled.html"


@dataclass(frozen=True)
class Metered:
    primitive: str
    quantity: int | Callable[[Any], int] = 1


def metered(primitive: str, *, quantity: int | Callable[[Any], int] = 1) -> Callable[..., Any]:
    """Meter a plain Django view on ``primitive``; ``quantity`` may be a callable of the
    request. ``QuotaMiddleware`` does the enforcing; a view reached without it fails loudly
    rather than run unmetered."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
            if not getattr(request, "billing_metered", False):
                raise BillingImproperlyConfigured(
                    f"{view.__qualname__} is @metered but {MIDDLEWARE} is not in MIDDLEWARE."
                )
            return view(request, *args, **kwargs)

        wrapper.billing_metered = Metered(primitive, quantity)  # type: ignore[attr-defined]
        return wrapper

    return decorate


def requires_feature(
    feature: str, *, template_name: str = FEATURE_TEMPLATE
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a plain Django view only for customers whose plan grants ``feature``.

    Refusals follow what asked. A browser (``Accept`` lists ``text/html``, no
    ``Authorization`` header) that is not signed in is redirected to ``LOGIN_URL``, as
    ``login_required`` does; one whose plan lacks the feature gets 403 rendered from
    ``template_name`` (``feature``, ``message`` in the context; override the template to
    brand it). Anything else (an API client) gets JSON: 403 ``{"error":
    "feature_not_enabled", "feature", "message"}``, or 401 with ``WWW-Authenticate`` when
    no customer is found. Tenant tokens and operator keys (``Authorization: Bearer``)
    work without the middleware."""
    try:
        check_feature("feature", feature)
    except InvalidInput as error:
        raise BillingImproperlyConfigured(
            f"requires_feature: {error.fields['feature'][0]}"
        ) from None

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            refusal = _feature_refusal(request, feature, template_name)
            if refusal is not None:
                return refusal
            return view(request, *args, **kwargs)

        wrapper.billing_feature = feature  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _feature_refusal(request: HttpRequest, feature: str, template_name: str) -> HttpResponse | None:
    try:
        if getattr(request, "auth", None) is None:
            bearer_authenticate(request)
        feature_check(request, feature)
    except (FeatureNotEnabled, *NO_CUSTOMER) as error:
        if not _wants_html(request) or isinstance(error, NotFound):
            return json_response(error)
        user = getattr(request, "user", None)
        if isinstance(error, CustomerRequired) and not (user and user.is_authenticated):
            return redirect_to_login(request.get_full_path())
        context = {"feature": feature, "message": error.message, "error": error}
        return render(request, template_name, context, status=403)
    return None


def _wants_html(request: HttpRequest) -> bool:
    """A browser asks for HTML by name; API clients send ``Authorization`` or accept JSON
    (or anything: ``*/*``)."""
    return "Authorization" not in request.headers and "text/html" in request.headers.get(
        "Accept", ""
    )


def unmetered(view: Any) -> Any:
    """Leave a view out of ``BILLING_METERED_PATHS``: its requests are not counted on
    their path's primitive (a health check, a login page). A function view, or a class
    (a Django or DRF view class: its ``as_view()`` is left out). ``@metered`` on the same
    view still counts its own primitive."""
    view.billing_unmetered = True
    return view
