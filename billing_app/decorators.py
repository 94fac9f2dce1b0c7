from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from .exceptions import BillingImproperlyConfigured

MIDDLEWARE = "billing_app.middleware.QuotaMiddleware"


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


def unmetered(view: Any) -> Any:
    """Leave a view out of ``BILLING_METERED_PATHS``: its requests are not counted on
    their path's primitive (a health check, a login page). A function view, or a class
    (a Django or DRF view class: its ``as_view()`` is left out). ``@metered`` on the same
    view still counts its own primitive."""
    view.billing_unmetered = True
    return view
