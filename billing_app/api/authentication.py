"""``Authorization: Bearer <key>`` for operator keys (``sk_``) and tenant tokens (``tk_``)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ObjectDoesNotExist
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from ..conf import customer_is_user
from ..customers.selectors import is_active
from ..exceptions import CustomerRequired
from ..models import OperatorKey, TenantToken
from .errors import WWW_AUTHENTICATE


class Operator(AnonymousUser):
    """The principal of a request made with an operator key: authenticated, but no user."""

    def __init__(self, key: OperatorKey) -> None:
        self.key = key

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True

    def __str__(self) -> str:
        return f"operator key {self.key.name}"


class CustomerPrincipal(AnonymousUser):
    """The principal of a tenant token issued to a customer that is not a user (an
    organisation's API key) and names no grantee."""

    def __init__(self, customer: Any) -> None:
        self.customer = customer

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True

    def __str__(self) -> str:
        return f"customer {self.customer}"


class _BearerKeyAuthentication(authentication.BaseAuthentication):
    model: type[OperatorKey] | type[TenantToken]

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        keyword, _, key = authentication.get_authorization_header(request).partition(b" ")
        scheme = self.model.objects.key_generator.scheme
        if keyword.lower() != b"bearer" or not key.startswith(scheme.encode()):
            return None  # Not ours: another authentication class may know it.
        try:
            api_key = self.model.objects.get_from_key(key.decode())
        except (ObjectDoesNotExist, UnicodeDecodeError, ValueError):
            raise exceptions.AuthenticationFailed("Invalid or revoked key.") from None
        return self.principal(api_key), api_key

    def principal(self, api_key: Any) -> Any:
        raise NotImplementedError

    def authenticate_header(self, request: Request) -> str:
        return WWW_AUTHENTICATE


class OperatorKeyAuthentication(_BearerKeyAuthentication):
    model = OperatorKey

    def principal(self, api_key: OperatorKey) -> Operator:
        return Operator(api_key)


class TenantTokenAuthentication(_BearerKeyAuthentication):
    """A tenant token acts for its customer; its user is the grantee it names, else the
    customer when customers are users. A deactivated user's token is refused, as DRF's
    TokenAuthentication refuses it."""

    model = TenantToken

    def principal(self, api_key: TenantToken) -> Any:
        customer, grantee = api_key.customer, api_key.grantee
        if not is_active(customer) or (grantee is not None and not is_active(grantee)):
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        if grantee is not None:
            return grantee
        return customer if customer_is_user() else CustomerPrincipal(customer)


def bearer_authenticate(request: Any) -> None:
    """For plain Django views (``@metered`` through the middleware, ``@requires_feature``):
    a tenant token or operator key in ``Authorization: Bearer`` sets ``request.user`` and
    ``request.auth`` as DRF would; an invalid or revoked one is ``CustomerRequired``."""
    for authenticator in (OperatorKeyAuthentication(), TenantTokenAuthentication()):
        try:
            found = authenticator.authenticate(request)
        except exceptions.AuthenticationFailed as error:
            raise CustomerRequired(str(error.detail)) from None
        if found is not None:
            request.user, request.auth = found
            return


class _BearerScheme(OpenApiAuthenticationExtension):
    """Documents the bearer keys in the OpenAPI schema."""

    target_class = "billing_app.api.authentication.OperatorKeyAuthentication"
    name = "operatorKey"
    description = "An operator key: Authorization: Bearer sk_..."

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": self.description}


class _TenantScheme(_BearerScheme):
    target_class = "billing_app.api.authentication.TenantTokenAuthentication"
    name = "tenantToken"
    description = "A tenant token: Authorization: Bearer tk_..."
