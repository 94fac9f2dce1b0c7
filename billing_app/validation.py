"""Checks of service arguments shared by every service: each raises ``InvalidInput`` that
names the argument, so the API can name the field the client sent."""

from __future__ import annotations

from typing import Any, Final

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug

from .exceptions import InvalidInput
from .models import validate_primitive

MAX_BIGINT = 2**63 - 1
MAX_INT = 2**31 - 1


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final[Any] = _Unset()
"""Default of optional service arguments: keep the current value (or the model default)."""


def invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput({field: [message]})


def check_primitive(field: str, primitive: Any) -> str:
    try:
        if not isinstance(primitive, str) or len(primitive) > 64:
            raise ValidationError("not a short string")
        validate_primitive(primitive)
    except ValidationError:
        raise invalid(
            field,
            f"{primitive!r} is not a primitive slug (lowercase letters, digits, '.', '_', '-').",
        ) from None
    return primitive


def check_feature(field: str, feature: Any) -> str:
    try:
        if not isinstance(feature, str) or not 0 < len(feature) <= 64:
            raise ValidationError("not a short string")
        validate_slug(feature)
    except ValidationError:
        raise invalid(field, f"{feature!r} is not a feature slug such as 'sso'.") from None
    return feature


def check_count(
    field: str, value: Any, *, what: str, minimum: int = 0, maximum: int = MAX_BIGINT
) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise invalid(
            field, f"{what} must be an integer from {minimum} to {maximum}, not {value!r}."
        )
    return value


def full_clean(instance: Any) -> None:
    try:
        instance.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        raise InvalidInput(error.message_dict) from None
