"""Metered demo endpoints: POST /demo/<primitive>/ with a tenant token, or an operator key
and X-Billing-User. A body {"simulate": "error"} answers 502 and {"simulate": "exception"}
raises, to show that a failed call costs nothing."""

import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing_app.decorators import metered


class SimulatedFailure(Exception):
    pass


def _answer(request: HttpRequest, primitive: str) -> JsonResponse:
    try:
        simulate = json.loads(request.body or b"{}").get("simulate")
    except (ValueError, AttributeError):
        simulate = None
    if simulate == "error":
        return JsonResponse({"primitive": primitive, "ok": False}, status=502)
    if simulate == "exception":
        raise SimulatedFailure(f"simulated failure of {primitive}")
    return JsonResponse({"primitive": primitive, "ok": True})


def demo_view(primitive: str):  # type: ignore[no-untyped-def]
    @csrf_exempt
    @require_POST
    @metered(primitive)
    def view(request: HttpRequest) -> JsonResponse:
        return _answer(request, primitive)

    return view


seo = demo_view("seo")
aeo = demo_view("aeo")
email_send = demo_view("email.send")
