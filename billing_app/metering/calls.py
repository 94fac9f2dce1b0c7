"""A metered request, from reservation to keep-or-refund: what the middleware (for
``@metered`` views) and the DRF mixin share."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.db import DatabaseError, connection
from django.utils import timezone
from django.utils.module_loading import import_string

from ..conf import billing_settings
from ..customers.resolvers import customer_of, resolve_customer
from ..exceptions import CallRefused, InvalidInput
from .ledger import Reservation
from .services import usage_alert, usage_refund, usage_reserve

Quantity = int | Callable[[Any], int]


def method_is_metered(view_class: Any, method: str | None) -> bool:
    """Whether a request of ``method`` to a view runs the view's own code, and so is
    metered. Every method does (a HEAD runs the GET handler and drops the body) but an
    OPTIONS that a class-based view answers with Django's or DRF's own ``options()``: the
    allowed methods, no handler. A function view runs its body for any method."""
    if method != "OPTIONS" or view_class is None:
        return True
    options = getattr(view_class, "options", None)
    return getattr(options, "__module__", "").split(".")[0] not in ("django", "rest_framework")


@dataclass
class MeteredCall:
    primitive: str
    reservation: Reservation
    settled: bool = False

    def finish(self, *, succeeded: bool, raised: bool = False) -> None:
        """Keep the usage of a call that succeeded (and send the alerts it crossed);
        refund one that failed. Once.

        A reservation made inside a transaction marked for rollback (DRF marks the
        ``ATOMIC_REQUESTS`` one on an error answer) is undone by that rollback; refunding
        would query a transaction that is going away. Otherwise a failed call is refunded
        even when the view raised: the transaction the reservation was made in may be an
        outer one that the exception never reaches (a test's, a middleware's), and when
        the exception does roll it back, the refund goes with it."""
        if self.settled:
            return
        self.settled = True
        if succeeded:
            usage_alert(reservation=self.reservation)
            return
        if self.reservation.in_transaction and connection.needs_rollback:
            return
        try:
            usage_refund(reservation=self.reservation)
        except DatabaseError:
            if not (raised and self.reservation.in_transaction):
                raise
            # The view's error left the transaction unusable: only its rollback can
            # follow, and that undoes the reservation.

    def headers(self) -> dict[str, str]:
        reservation = self.reservation
        if reservation.limit is None:
            return {}
        return quota_headers(
            primitive=self.primitive,
            limit=reservation.limit,
            remaining=max(0, reservation.limit - reservation.used),
            window_seconds=int((reservation.window.end - reservation.window.start).total_seconds()),
            reset=max(0, math.ceil((reservation.window.end - timezone.now()).total_seconds())),
        )


def quota_headers(
    *, primitive: str, limit: int, remaining: int, window_seconds: int, reset: int
) -> dict[str, str]:
    """The IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers-09)."""
    return {
        "RateLimit-Policy": f'"{primitive}";q={limit};w={window_seconds}',
        "RateLimit": f'"{primitive}";r={remaining};t={reset}',
    }


def call_start(request: Any, *, primitive: str, quantity: Quantity = 1) -> MeteredCall:
    """Decide and reserve a metered call of ``request``; raises ``CallRefused`` (or
    ``CustomerRequired``) when it may not run. The caller runs the work, then ``finish``."""
    return _start(request, resolve_customer(request), primitive=primitive, quantity=quantity)


def path_call_start(request: Any, *, primitive: str, quantity: Quantity = 1) -> MeteredCall | None:
    """``call_start`` for a request counted by its path: None, and nothing reserved, when
    the request carries no credentials (the view decides whether it may run anonymously:
    a login page, a public document). Credentials that name no customer it may act for are
    refused as ``call_start`` refuses them."""
    customer = customer_of(request)
    if customer is None:
        return None
    return _start(request, customer, primitive=primitive, quantity=quantity)


def _start(request: Any, customer: Any, *, primitive: str, quantity: Quantity) -> MeteredCall:
    amount = quantity(request) if callable(quantity) else quantity
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount < 2**63:
        raise InvalidInput(
            {"quantity": [f"A quantity is a positive integer below 2^63, not {amount!r}."]}
        )
    # The alerts wait for the view: a failed call's usage is refunded, it crosses nothing.
    reservation = usage_reserve(
        customer_id=customer.pk, primitive=primitive, quantity=amount, alert=False
    )
    return MeteredCall(primitive=primitive, reservation=reservation)


def refusal_headers(error: CallRefused) -> dict[str, str]:
    """``Retry-After``, and for a refusal over a limit the RateLimit fields, as a call
    within the limit carries them."""
    headers = {}
    if error.wait:
        headers["Retry-After"] = str(error.wait)
    if error.limit is not None and error.window_seconds and error.wait:
        headers.update(
            quota_headers(
                primitive=error.primitive,
                limit=error.limit,
                remaining=0,
                window_seconds=error.window_seconds,
                reset=error.wait,
            )
        )
    return headers


def succeeded(status_code: int) -> bool:
    return 200 <= status_code < 400


def headers_add(response: Any, headers: dict[str, str]) -> None:
    """Set ``headers`` on ``response``, appending to a field it has already: a request
    counted on two primitives carries both policies (the fields are lists)."""
    for name, value in headers.items():
        response[name] = f"{response[name]}, {value}" if name in response else value


def path_primitive(request: Any) -> str | None:
    """The primitive ``BILLING_METERED_PATHS`` counts ``request`` on, or None."""
    rule = billing_settings.METERED_PATHS
    if not rule:
        return None
    if isinstance(rule, str):
        return _callable(rule)(request)
    path = request.path_info
    matches = [prefix for prefix in rule if path.startswith(prefix)]
    return rule[max(matches, key=len)] if matches else None


@cache
def _callable(path: str) -> Callable[[Any], str | None]:
    return import_string(path)


def counted_once(request: Any, primitive: str) -> bool:
    """Whether the request is counted on ``primitive`` already (by its path)."""
    return any(call.primitive == primitive for call in getattr(request, "billing_calls", ()))
