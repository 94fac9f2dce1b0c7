"""Writes about customers: creating one, its kit, and the keys that act for it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.core.validators import validate_email
from django.db import models, transaction
from django.utils import timezone

from ..conf import customer_is_user, customer_model
from ..entitlements import entitlements_changed
from ..exceptions import InvalidInput
from ..models import AccountKit, KitAssignment, OperatorKey, QuotaGrant, TenantToken
from ..validation import invalid


def customer_create(*, email: str, name: str = "") -> Any:
    """A new customer. For the user model: a user that logs in with no password. For
    another model: one with this email (and name, where the model has those fields)."""
    try:
        validate_email(email)
    except ValidationError:
        raise invalid("email", f"{email!r} is not an email address.") from None
    Customer = customer_model()
    if customer_is_user():
        return _user_create(email)
    fields = {}
    for field, value in (("email", email), ("name", name or email)):
        try:
            Customer._meta.get_field(field)
        except FieldDoesNotExist:
            continue
        fields[field] = value
    customer = Customer(**fields)
    try:
        customer.full_clean()
    except ValidationError as error:
        raise InvalidInput(error.message_dict) from None
    customer.save()
    return customer


def _user_create(email: str) -> Any:
    User = get_user_model()
    email_field = User.get_email_field_name()
    for name in {email_field, User.USERNAME_FIELD}:
        field = User._meta.get_field(name)
        max_length = field.max_length if isinstance(field, models.Field) else None
        if max_length and len(email) > max_length:
            raise invalid("email", f"An email may have at most {max_length} characters.")
    if User._default_manager.filter(**{f"{email_field}__iexact": email}).exists():
        raise invalid("email", "A user with this email exists already.")
    fields = {email_field: email}
    if email_field != User.USERNAME_FIELD:
        fields[User.USERNAME_FIELD] = email
    user = User._default_manager.create_user(**fields)  # type: ignore[attr-defined]
    user.set_unusable_password()
    user.save()
    return user


def tenant_token_issue(
    *,
    customer: Any,
    grantee: Any = None,
    name: str = "api",
    expiry_date: datetime | None = None,
) -> tuple[TenantToken, str]:
    """A new token for ``customer`` (naming ``grantee``, a user, when given); the returned
    key is shown once and stored only hashed."""
    token, key = TenantToken.objects.create_key(
        customer=customer, grantee=grantee, name=name[:50], expiry_date=expiry_date
    )
    return token, key  # type: ignore[return-value]


def operator_key_create(
    *, name: str, expiry_date: datetime | None = None
) -> tuple[OperatorKey, str]:
    """A new operator key; the returned key is shown once and stored only hashed."""
    if not name:
        raise invalid("name", "An operator key needs a name.")
    operator_key, key = OperatorKey.objects.create_key(name=name[:50], expiry_date=expiry_date)
    return operator_key, key  # type: ignore[return-value]


def api_key_revoke(*, key: OperatorKey | TenantToken) -> None:
    key.revoked = True
    key.save(update_fields=["revoked"])


@transaction.atomic
def kit_assign(*, customer: Any, kit: AccountKit | None) -> KitAssignment | None:
    """Give ``customer`` the kit ``kit``, or no kit (no kit gating) when it is None."""
    entitlements_changed(customer_ids=[customer.pk])
    if kit is None:
        KitAssignment.objects.filter(customer=customer).delete()
        return None
    assignment, _ = KitAssignment.objects.update_or_create(customer=customer, defaults={"kit": kit})
    return assignment


@transaction.atomic
def quota_grant(
    *, customer: Any, primitive: str, amount: int, reason: str, granted_by: Any = None
) -> QuotaGrant:
    """Raise ``customer``'s quota of ``primitive`` by ``amount`` for the quota window it is
    in now, recorded with who granted it and why. It binds at once, as any change does."""
    from ..entitlements import entitlement_for
    from ..validation import check_count, check_primitive

    check_primitive("primitive", primitive)
    check_count("amount", amount, what="amount", minimum=1)
    if not isinstance(reason, str) or not reason.strip():
        raise invalid("reason", "Say why the quota is raised.")
    entitlement = entitlement_for(customer_id=customer.pk, fresh=True)
    if entitlement.quota(primitive, entitlement.window(timezone.now())) is None:
        raise invalid("primitive", f"The customer's plan sets no quota of {primitive}.")
    window = entitlement.window(timezone.now())
    grant = QuotaGrant.objects.create(
        customer=customer,
        primitive=primitive,
        window_start=window.start,
        window_end=window.end,
        amount=amount,
        reason=reason.strip(),
        granted_by=granted_by,
    )
    entitlements_changed(customer_ids=[customer.pk])
    return grant
