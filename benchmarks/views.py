"""The views the benchmarks load, beside the project's own (benchmarks/urls.py routes them).

Every one is called with a tenant token (``Authorization: Bearer tk_...``) and answers the
demo's body (``project.demo.views._answer``), so they differ only in how the call is
authenticated, dispatched and metered:

    plain      POST /bench/plain/       DRF APIView, TenantTokenAuthentication, unmetered
    plain_fn   POST /bench/unmetered/   Django function view, the same token check, unmetered
    metered    POST /demo/seo/          Django function view, @metered + QuotaMiddleware
    mixin      POST /bench/mixin/       DRF APIView with MeteredMixin
    floor      POST /bench/floor/       token check + one SQL statement (benchmarks/peers.py)
    sfu        POST /bench/sfu/         token check + ORM select_for_update (benchmarks/peers.py)
    ratelimit  POST /bench/ratelimit/   token check + django-ratelimit on the cache (Redis)

The peers that charge a call (floor, sfu) answer the counter they reached in the same
``RateLimit`` field as the app (``r`` = limit - used), so the load generator can check that
no two successful calls got the same charge.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from django_ratelimit.decorators import ratelimit
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.views import APIView

from billing_app.api.authentication import TenantTokenAuthentication
from billing_app.api.mixins import MeteredMixin
from project.demo.views import _answer

from . import peers

# The primitive each charging variant meters, one per variant so that the events of each
# can be told apart afterwards. "metered" is the demo's /demo/seo/.
PRIMITIVES = {"metered": "seo", "mixin": "aeo", "floor": "bench.floor", "sfu": "bench.sfu"}
# The limit the peers enforce (the app's variants take theirs from the tenant's plan).
PEER_LIMIT = 10**12
# django-ratelimit's rate: far above what two workers serve, so it never refuses.
RATELIMIT_RATE = "100000/m"

_authenticator = TenantTokenAuthentication()


def _tenant(request: HttpRequest) -> Any:
    try:
        found = _authenticator.authenticate(request)  # type: ignore[arg-type]
    except AuthenticationFailed:
        found = None
    return found[0] if found else None


def _unauthenticated() -> JsonResponse:
    return JsonResponse({"detail": "unauthenticated"}, status=401)


def _charged(response: JsonResponse, primitive: str, used: int | None) -> JsonResponse:
    if used is None:
        return JsonResponse({"detail": "quota exceeded"}, status=429)
    response["RateLimit"] = f'"{primitive}";r={PEER_LIMIT - used}'
    return response


@csrf_exempt
@require_POST
def unmetered(request: HttpRequest) -> JsonResponse:
    if _tenant(request) is None:
        return _unauthenticated()
    return _answer(request, "seo")


@csrf_exempt
@require_POST
def floor(request: HttpRequest) -> JsonResponse:
    user = _tenant(request)
    if user is None:
        return _unauthenticated()
    primitive = PRIMITIVES["floor"]
    used = peers.floor_charge(customer_id=user.pk, primitive=primitive, limit=PEER_LIMIT)
    return _charged(_answer(request, primitive), primitive, used)


@csrf_exempt
@require_POST
def sfu(request: HttpRequest) -> JsonResponse:
    user = _tenant(request)
    if user is None:
        return _unauthenticated()
    primitive = PRIMITIVES["sfu"]
    used = peers.sfu_charge(customer_id=user.pk, primitive=primitive, limit=PEER_LIMIT)
    return _charged(_answer(request, primitive), primitive, used)


@ratelimit(group="bench.ratelimit", key="user", rate=RATELIMIT_RATE, block=True)
def _ratelimited(request: HttpRequest) -> JsonResponse:
    return _answer(request, "ratelimit")


@csrf_exempt
@require_POST
def ratelimited(request: HttpRequest) -> JsonResponse:
    user = _tenant(request)
    if user is None:
        return _unauthenticated()
    request.user = user
    return _ratelimited(request)


class Plain(APIView):
    authentication_classes = [TenantTokenAuthentication]
    permission_classes = [IsAuthenticated]

    def post(self, request: Request) -> JsonResponse:
        return _answer(request, "plain")  # type: ignore[arg-type]


class Mixin(MeteredMixin, APIView):
    authentication_classes = [TenantTokenAuthentication]
    permission_classes = [IsAuthenticated]
    metered = PRIMITIVES["mixin"]

    def post(self, request: Request) -> JsonResponse:
        return _answer(request, PRIMITIVES["mixin"])  # type: ignore[arg-type]
