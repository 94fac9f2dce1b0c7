"""Views that exist only for the tests: metered views that fail in ways the demo views
cannot (database errors), take a quantity from the request, or go through DRF."""

from __future__ import annotations

import json

from django.core.exceptions import BadRequest
from django.db import DatabaseError, connection, transaction
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_app.api.authentication import OperatorKeyAuthentication, TenantTokenAuthentication
from billing_app.api.mixins import MeteredMixin
from billing_app.api.permissions import HasFeature
from billing_app.decorators import metered, requires_feature, unmetered


def pages_of(request) -> int:
    """The quantity of a call: ``{"pages": n}`` in the JSON body (DRF or plain), default 1."""
    data = getattr(request, "data", None)
    if data is None:
        data = json.loads(request.body or b"{}")
    return data.get("pages", 1)


@csrf_exempt
@metered("seo")
def seo_with_db_error(request: HttpRequest) -> JsonResponse:
    """Runs invalid SQL. ``?atomic=0`` runs it outside ``transaction.atomic()``;
    ``?catch=1`` answers 503 instead of letting the ``DatabaseError`` escape."""
    try:
        if request.GET.get("atomic") == "0":
            with connection.cursor() as cursor:
                cursor.execute("SELECT no_such_column FROM no_such_table")
        else:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT no_such_column FROM no_such_table")
    except DatabaseError:
        if request.GET.get("catch") == "1":
            return JsonResponse({"ok": False}, status=503)
        raise
    return JsonResponse({"ok": True})


@csrf_exempt
@metered("seo", quantity=pages_of)
def seo_pages(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


@csrf_exempt
@metered("seo")
def seo_answer(request: HttpRequest) -> JsonResponse:
    """``{"fail": "status"}`` answers 503, ``"validation"`` raises a 400, ``"not_found"``
    a 404, ``"exception"`` an unhandled error. A success says whether it ran in a
    transaction (``ATOMIC_REQUESTS``)."""
    fail = json.loads(request.body or b"{}").get("fail")
    if fail == "status":
        return JsonResponse({"ok": False}, status=503)
    if fail == "validation":
        raise BadRequest("asked to fail")
    if fail == "not_found":
        raise Http404("asked to fail")
    if fail == "exception":
        raise RuntimeError("asked to fail")
    return JsonResponse({"ok": True, "atomic": connection.in_atomic_block})


def _drf_answer(request: Request) -> Response:
    """``{"fail": "status"}`` answers 503, ``"validation"`` raises a 400, ``"not_found"``
    a 404, ``"exception"`` an unhandled error. A success says whether it ran in a
    transaction (``ATOMIC_REQUESTS``)."""
    fail = request.data.get("fail")
    if fail == "status":
        return Response({"ok": False}, status=503)
    if fail == "validation":
        raise ValidationError({"fail": ["asked to fail"]})
    if fail == "not_found":
        raise NotFound("asked to fail")
    if fail == "exception":
        raise RuntimeError("asked to fail")
    return Response({"ok": True, "atomic": connection.in_atomic_block})


class DRFView(APIView):
    authentication_classes = [OperatorKeyAuthentication, TenantTokenAuthentication]
    permission_classes = [IsAuthenticated]


class ReportView(MeteredMixin, DRFView):
    """POST is metered on seo (per-method mapping); GET is not."""

    metered = {"post": "seo"}

    def get(self, request: Request) -> Response:
        return Response({"ok": True})

    def post(self, request: Request) -> Response:
        return _drf_answer(request)


class PagesView(MeteredMixin, DRFView):
    """The quantity is a callable of the request, assigned as the docstring shows. Every
    method is metered, GET too (so HEAD, answered by ``get``, would be if it were not
    left out)."""

    metered = "seo"
    metered_quantity = pages_of

    def get(self, request: Request) -> Response:
        return Response({"ok": True})

    def post(self, request: Request) -> Response:
        return Response({"ok": True})


class ReportViewSet(MeteredMixin, viewsets.ViewSet):
    """Per-action mapping: ``create`` is metered on aeo, ``list`` is not."""

    authentication_classes = [OperatorKeyAuthentication, TenantTokenAuthentication]
    permission_classes = [IsAuthenticated]
    metered = {"create": "aeo"}

    def list(self, request: Request) -> Response:
        return Response([])

    def create(self, request: Request) -> Response:
        return _drf_answer(request)


# Gating


@csrf_exempt
@requires_feature("sso")
def sso_settings(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


@csrf_exempt
@requires_feature("csv-export")
@metered("seo")
def metered_export(request: HttpRequest) -> JsonResponse:
    """Gated and metered: the feature is checked before the view (and its quota) counts."""
    return JsonResponse({"ok": True})


class ExportView(APIView):
    authentication_classes = [TenantTokenAuthentication, SessionAuthentication]
    permission_classes = [HasFeature("csv-export")]

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


class EitherFeatureView(ExportView):
    permission_classes = [HasFeature("sso") | HasFeature("csv-export")]


class SessionOnlyExportView(ExportView):
    authentication_classes = [SessionAuthentication]


# Requests counted by their path (BILLING_METERED_PATHS), under /test/api/

SEO_PRIMITIVE = "seo"  # not a callable: a BILLING_METERED_PATHS that names it is refused


def api_primitive(request) -> str | None:
    """BILLING_METERED_PATHS as a callable: /test/api/ counts on api.calls, except
    /test/api/excluded/."""
    path = request.path_info
    if path.startswith("/test/api/") and not path.startswith("/test/api/excluded/"):
        return "api.calls"
    return None


def _plain_answer(request: HttpRequest) -> JsonResponse:
    """``{"fail": "status"}`` answers 503, ``"exception"`` raises."""
    fail = json.loads(request.body or b"{}").get("fail") if request.body else None
    if fail == "status":
        return JsonResponse({"ok": False}, status=503)
    if fail == "exception":
        raise RuntimeError("asked to fail")
    return JsonResponse({"ok": True, "atomic": connection.in_atomic_block})


@csrf_exempt
def api_plain(request: HttpRequest) -> JsonResponse:
    """Counted by its path only: no decorator."""
    return _plain_answer(request)


@csrf_exempt
@metered("seo")
def api_seo(request: HttpRequest) -> JsonResponse:
    return _plain_answer(request)


@csrf_exempt
@metered("api.calls", quantity=pages_of)
def api_pages(request: HttpRequest) -> JsonResponse:
    """Meters its path's own primitive, by a quantity of its own."""
    return _plain_answer(request)


@csrf_exempt
@unmetered
def api_health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


class ApiReportView(MeteredMixin, DRFView):
    metered = {"post": "seo"}

    def get(self, request: Request) -> Response:
        return Response({"ok": True})

    def post(self, request: Request) -> Response:
        return _drf_answer(request)


class ApiCallsView(MeteredMixin, DRFView):
    """Meters its path's own primitive."""

    metered = "api.calls"

    def post(self, request: Request) -> Response:
        return _drf_answer(request)


@unmetered
class ApiStatusView(DRFView):
    def get(self, request: Request) -> Response:
        return Response({"ok": True})
