"""The OpenAPI schema of the app's endpoints and a Swagger UI page for it.

Both carry what they need, so a host adds no setting for them: the schema view its
drf-spectacular ``AutoSchema`` (whatever the host's ``DEFAULT_SCHEMA_CLASS``), the page
its own template whose assets come from ``drf_spectacular_sidecar``'s static files (no
CDN, so it works offline). ``drf_spectacular`` itself need not be installed: a host that
installs it gets its deploy check, which then finds nothing to say about these views.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_safe
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.views import SpectacularAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from .schema import extend_schema

TITLE = "billing_app API"


def _version() -> str:
    try:
        return version("billing_app")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return ""


class SchemaView(SpectacularAPIView):
    schema = AutoSchema()
    # OpenAPI 3.1: JSON Schema proper, which can say that an object's keys are slugs.
    custom_settings = {
        "OAS_VERSION": "3.1.0",
        "TITLE": TITLE,
        "DESCRIPTION": "Operator API (`/v1/`) and customer self-service (`/billing/`).",
        "VERSION": _version(),
    }

    # drf-spectacular decorates its own get with the host's DEFAULT_SCHEMA_CLASS, read
    # when it is imported: this one is bound to its AutoSchema whatever the host says.
    @extend_schema(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


@require_safe
def api_docs(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Swagger UI over ``billing:schema``; templates may override
    ``billing_app/api_docs.html``."""
    return TemplateResponse(
        request,
        "billing_app/api_docs.html",
        {"title": TITLE, "schema_url": reverse("billing:schema")},
    )
