"""The OpenAPI schema as the API really answers: who may call each endpoint, every error
each can answer and the shape of its body.

Each operation declares what only it can answer (``errors(404, 409)`` in its
``extend_schema`` responses); what every operation can answer is added here: 401 and 403
(credentials), 406 (an Accept header no renderer satisfies), 400 and 415 for operations
that take a body, and 404 on ``/billing/`` (``X-Billing-Customer`` names no customer).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from django.conf import settings
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from drf_spectacular.utils import extend_schema as _extend_schema
from rest_framework import serializers

from .permissions import IsOperator

ERROR = "Error"
FIELD_ERRORS = "FieldErrors"
REFUSAL = "Refusal"

COMPONENTS: dict[str, dict[str, Any]] = {
    ERROR: {
        "type": "object",
        "description": "What went wrong, for a person to read. A 409 may add fields that "
        "say more (camelCase).",
        "properties": {"detail": {"type": "string"}},
        "required": ["detail"],
    },
    FIELD_ERRORS: {
        "type": "object",
        "description": "Each field the request got wrong, named as it was sent (a nested "
        "field by its dotted path, or as an object of its own parts), with its messages.",
        "additionalProperties": {
            "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "object"}]
        },
        "minProperties": 1,
    },
    REFUSAL: {
        "type": "object",
        "description": "A metered call refused: over a quota (error `rate_limited`, or "
        "`usage_limit_exceeded` when quotas answer 402), over a per-minute rate "
        "(`too_many_requests`), outside the customer's Account Kit "
        "(`primitive_not_allowed`), without a usable subscription "
        "(`subscription_inactive`), or costing more credits than the balance holds "
        "(`insufficient_credits`).",
        "properties": {
            "error": {
                "type": "string",
                "enum": [
                    "rate_limited",
                    "usage_limit_exceeded",
                    "too_many_requests",
                    "primitive_not_allowed",
                    "subscription_inactive",
                    "insufficient_credits",
                ],
            },
            "message": {"type": "string"},
            "primitive": {"type": "string"},
            "usage": {
                "type": "object",
                "properties": {
                    "current": {"type": ["integer", "null"]},
                    "limit": {"type": "integer"},
                },
                "required": ["current", "limit"],
            },
            "credits": {
                "type": "object",
                "properties": {"balance": {"type": "integer"}, "cost": {"type": "integer"}},
                "required": ["balance", "cost"],
            },
            "resetsAt": {"type": "string", "format": "date-time"},
        },
        "required": ["error", "message", "primitive"],
    },
}

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "operatorKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An operator key: `Authorization: Bearer sk_...`.",
    },
    "tenantToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A tenant token, which acts for the customer it was issued to: "
        "`Authorization: Bearer tk_...`.",
    },
    "billingCustomer": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Billing-Customer",
        "description": "The id of the customer an operator key acts for on `/billing/`.",
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _session_scheme() -> dict[str, Any]:
    return {
        "type": "apiKey",
        "in": "cookie",
        "name": settings.SESSION_COOKIE_NAME,
        "description": "The host project's session of a signed-in user (writes need its "
        "CSRF token). On `/v1/` the user needs the `billing_app.operate` permission; on "
        "`/billing/` it acts for the user's customer.",
    }


BODIES: dict[int, tuple[str, dict[str, Any]]] = {
    202: ("Stripe accepted the change; it shows here after the next sync.", _ref(ERROR)),
    400: (
        "Invalid input: the fields it got wrong, or a body that is not JSON.",
        {"anyOf": [_ref(FIELD_ERRORS), _ref(ERROR)]},
    ),
    401: ("No credentials, or credentials that are invalid or revoked.", _ref(ERROR)),
    402: (
        "Refused: no usable subscription, not enough credits (or over a quota, when "
        "quotas answer 402).",
        _ref(REFUSAL),
    ),
    403: ("These credentials may not do this.", _ref(ERROR)),
    404: ("Not found.", _ref(ERROR)),
    406: ("No renderer satisfies the Accept header.", _ref(ERROR)),
    409: ("Conflicts with the current state.", _ref(ERROR)),
    415: ("The body is not JSON (Content-Type).", _ref(ERROR)),
    429: ("Refused: over a quota or a per-minute rate.", _ref(REFUSAL)),
    502: ("Stripe could not do this now; nothing was changed.", _ref(ERROR)),
}


def errors(*codes: int, **bodies: dict[str, Any]) -> dict[int, OpenApiResponse]:
    """The error responses of ``codes`` for ``extend_schema(responses=...)``; ``bodies``
    (``status_403=...``) replaces the body schema of one."""
    responses = {}
    for code in codes:
        description, schema = BODIES[code]
        responses[code] = OpenApiResponse(
            response=bodies.get(f"status_{code}", schema), description=description
        )
    return responses


PAGE_PARAMETERS = [
    OpenApiParameter(
        "cursor", str, description="Where a page starts: from a `next` or `previous` link."
    ),
    OpenApiParameter("pageSize", int, description="Items per page: 20 unless given, at most 100."),
]

REFUSED_OR_FORBIDDEN = {"anyOf": [_ref(REFUSAL), _ref(ERROR)]}


class BillingAutoSchema(AutoSchema):
    def get_description(self) -> str:  # type: ignore[override]
        # The view's own docstring only: not the one it inherits from the app's base views.
        method = getattr(self.view, self.method.lower(), None)
        own = self.view.__class__.__dict__.get("__doc__")
        doc = (method.__doc__ if method else None) or own or ""
        return " ".join(doc.split())

    def get_auth(self) -> list[dict[str, list[str]]]:
        for name, definition in [*SECURITY_SCHEMES.items(), ("session", _session_scheme())]:
            self._register(name, ResolvedComponent.SECURITY_SCHEMA, definition)
        if self._for_operators():
            return [{"operatorKey": []}, {"session": []}]
        return [
            {"tenantToken": []},
            {"operatorKey": [], "billingCustomer": []},
            {"session": []},
        ]

    def map_parsers(self) -> list[Any]:
        # Forms are parsed for the browsable API's sake; the API's contract is JSON.
        return ["application/json"]

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        for name, schema in COMPONENTS.items():
            self._register(name, ResolvedComponent.SCHEMA, schema)
        responses = super()._get_response_bodies(direction)
        common = [401, 403, 406]
        if not self._for_operators():
            common.append(404)  # X-Billing-Customer names no customer
        if self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer():
            common += [400, 415]
        for code, response in errors(*common).items():
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(response, str(code))
        if "401" in responses:
            responses["401"]["headers"] = {
                "WWW-Authenticate": {"schema": {"type": "string"}, "required": True}
            }
        return dict(sorted(responses.items()))

    def _unwrap_list_serializer(self, serializer: Any, direction: Any) -> Any:
        schema = super()._unwrap_list_serializer(serializer, direction)
        if schema and isinstance(serializer, serializers.ListSerializer):
            # Set by ListSerializer.__init__ (DRF 3.14+); the stubs do not declare them.
            min_length = serializer.min_length  # type: ignore[attr-defined]
            max_length = serializer.max_length  # type: ignore[attr-defined]
            if min_length is not None or not serializer.allow_empty:
                schema["minItems"] = max(min_length or 0, 0 if serializer.allow_empty else 1)
            if max_length is not None:
                schema["maxItems"] = max_length
        return schema

    def _map_serializer_field(
        self, field: Any, direction: Any, bypass_extensions: bool = False
    ) -> Any:
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if not isinstance(schema, dict):
            return schema
        key_pattern = getattr(field, "key_pattern", None)
        if key_pattern:
            schema["propertyNames"] = {"pattern": key_pattern}
        if (
            direction == "request"
            and isinstance(field, serializers.CharField)
            and not field.allow_blank
        ):
            schema.setdefault("minLength", 1)  # DRF refuses a blank string
        return schema

    def _insert_field_validators(self, field: Any, schema: dict[str, Any]) -> None:
        super()._insert_field_validators(field, schema)
        # drf-spectacular offers a blank string as a second choice of a string with a
        # pattern; when the pattern takes a blank string already, "oneOf" would refuse it.
        blank = {"type": "string", "maxLength": 0}
        options = schema.get("oneOf") or []
        if len(options) == 2 and blank in options:
            (other,) = [option for option in options if option != blank]
            if set(other) <= {"type", "pattern", "maxLength"} and re.search(
                other.get("pattern", ""), ""
            ):
                del schema["oneOf"]
                schema.update(other)

    def _for_operators(self) -> bool:
        return any(isinstance(p, IsOperator) for p in self.view.get_permissions())

    def _register(self, name: str, kind: str, schema: dict[str, Any]) -> None:
        # A copy: drf-spectacular's hooks rewrite the schemas they are given (enums
        # become components), and the next document would refer to one it lacks.
        self.registry.register_on_missing(
            ResolvedComponent(name=name, type=kind, object=name, schema=copy.deepcopy(schema))
        )


def extend_schema(**kwargs: Any) -> Any:
    """drf-spectacular's decorator, bound to the app's schema class whatever the host's
    ``DEFAULT_SCHEMA_CLASS`` is (a method decorator otherwise reads that setting)."""

    def decorate(method: Any) -> Any:
        method.schema = BillingAutoSchema
        return _extend_schema(**kwargs)(method)

    return decorate
