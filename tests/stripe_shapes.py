"""What Stripe's answers look like and what its requests may carry, for the stand-in.

Shapes come from Stripe's published example objects (``tests/stripe_fixtures.json``, a copy
of ``fixtures3.json`` from Stripe's openapi repository): an object of a type has exactly the
keys of that type's example, no more and no fewer. Fields that Stripe includes only when
asked (``expand[]=sources`` on a customer, ``line_items`` on a Checkout Session) are the
fields that stripe-python declares on the type but the example leaves out.

Parameters come from stripe-python's request parameter types (``stripe.params``), which are
generated from the same OpenAPI specification for the API version stripe-python pins: a
parameter it does not declare is refused as Stripe refuses it (``parameter_unknown``), a
required one that is missing is ``parameter_missing``, and a value of the wrong type is
refused with Stripe's message (``Invalid integer: x``). Enumerations are closed: stripe-python
adds ``| str`` to each for forward compatibility, Stripe's server does not accept other
values.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import json
import re
import typing
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, NotRequired, Required

import stripe
from stripe._object_classes import OBJECT_CLASSES
from stripe._request_options import RequestOptions
from stripe._stripe_object import StripeObject
from typing_extensions import is_typeddict

FIXTURES: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "stripe_fixtures.json").read_text()
)["resources"]

# Keys whose values are free-form maps: their keys are the caller's, not Stripe's.
FREE_FORM = {"metadata", "payload", "currency_options"}

DOCS = "https://docs.stripe.com/error-codes/"


def fixture(kind: str) -> dict[str, Any]:
    return copy.deepcopy(FIXTURES[kind])


# --- errors --------------------------------------------------------------------------


class StripeRefusal(Exception):
    """An answer Stripe gives instead of an object: status and error object."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (
            status,
            message,
            type,
            code,
            param,
        )

    def body(self, request_id: str) -> dict[str, Any]:
        """Stripe's error object: ``code``, ``doc_url`` and ``param`` only when they apply."""
        error: dict[str, Any] = {"message": self.message, "type": self.type}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = DOCS + self.code.replace("_", "-")
        if self.param:
            error["param"] = self.param
        error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        return {"error": error}


def missing(kind: str, obj_id: str, *, param: str, status: int = 400) -> StripeRefusal:
    """Stripe's answer for an id it does not know: 404 in the URL, 400 in a parameter."""
    noun = kind.split(".")[-1].replace("_", " ")
    return StripeRefusal(
        f"No such {noun}: '{obj_id}'", status=status, code="resource_missing", param=param
    )


# --- parameters ------------------------------------------------------------------------


def params_type(name: str) -> type:
    """A stripe-python parameter type by name: ``SubscriptionModifyParams``,
    ``checkout.SessionCreateParams``."""
    module, _, cls = name.rpartition(".")
    return getattr(importlib.import_module("stripe.params" + (f".{module}" if module else "")), cls)


@functools.cache
def _fields(td: type) -> dict[str, Any]:
    """The parameters a TypedDict declares (request options left out), types evaluated."""
    annotations: dict[str, Any] = {}
    for klass in reversed(td.__mro__):
        if klass is RequestOptions:
            continue
        for name, annotation in inspect.get_annotations(klass).items():
            if name not in RequestOptions.__annotations__:
                annotations[name] = annotation
    shim = type("shim", (), {"__annotations__": annotations, "__module__": td.__module__})
    return typing.get_type_hints(shim, include_extras=True)


def _required(td: type) -> set[str]:
    return set(td.__required_keys__) - set(RequestOptions.__annotations__)


def check(params: dict[str, Any], td: type) -> None:
    """Refuse ``params`` as Stripe would, by the parameter type ``td``."""
    _check_fields(params, td, "")


def _check_fields(value: dict[str, Any], td: type, prefix: str) -> None:
    fields = _fields(td)
    for key, item in value.items():
        name = f"{prefix}[{key}]" if prefix else key
        if key not in fields:
            raise StripeRefusal(
                f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )
        _check(item, fields[key], name)
    for key in sorted(_required(td) - set(value)):
        name = f"{prefix}[{key}]" if prefix else key
        raise StripeRefusal(
            f"Missing required param: {name}.", code="parameter_missing", param=name
        )


def _members(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin in (NotRequired, Required, typing.Annotated):
        return _members(typing.get_args(annotation)[0])
    if origin is typing.Union:
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _check(value: Any, annotation: Any, name: str) -> None:
    members = _members(annotation)
    literals = [v for m in members if typing.get_origin(m) is Literal for v in typing.get_args(m)]
    others = [m for m in members if typing.get_origin(m) is not Literal]
    if value == "":
        # Stripe takes an empty string as "unset". Where the specification says a field
        # can be unset (``Literal['']``) that is plainly fine; a plain text field takes it
        # too (dj-stripe sends ``name=""`` for every user without a full name); a number,
        # a flag, a choice, an id list or a hash cannot be unset and is refused.
        if "" in literals or (str in others and not [v for v in literals if v != ""]):
            return
        raise StripeRefusal(
            f"You passed an empty string for '{name}'. We assume empty values are an attempt "
            f"to unset a parameter; however '{name}' cannot be unset. You should remove "
            f"'{name}' from your request or supply a non-empty value.",
            code="parameter_invalid_empty",
            param=name,
        )
    choices = [v for v in literals if v != ""]
    if choices and all(m is str for m in others):  # an enumeration: closed on the server
        if value in choices:
            return
        listed = ", ".join(choices[:-1]) + (", or " if len(choices) > 2 else " or ") + choices[-1]
        raise StripeRefusal(
            f"Invalid {name}: must be one of {listed if len(choices) > 1 else choices[0]}",
            param=name,
        )
    if value in choices:
        return
    first: StripeRefusal | None = None
    for member in others:
        try:
            _check_one(value, member, name)
            return
        except StripeRefusal as refusal:
            first = first or refusal
    if first:
        raise first


def _check_one(value: Any, annotation: Any, name: str) -> None:
    origin = typing.get_origin(annotation)
    if annotation is typing.Any or annotation is object:
        return
    if annotation is str:
        if not isinstance(value, str):
            raise StripeRefusal(f"Invalid string: {_ruby(value)}", param=name)
    elif annotation is bool:
        if value not in ("true", "false"):
            raise StripeRefusal(f"Invalid boolean: {_ruby(value)}", param=name)
    elif annotation is int:
        if not (isinstance(value, str) and re.fullmatch(r"-?\d+", value)):
            raise StripeRefusal(
                f"Invalid integer: {_ruby(value)}", code="parameter_invalid_integer", param=name
            )
    elif annotation in (float, Decimal):
        if not (isinstance(value, str) and re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)", value)):
            raise StripeRefusal(f"Invalid decimal: {_ruby(value)}", param=name)
    elif origin in (list, typing.List):  # noqa: UP006
        if not isinstance(value, list):
            raise StripeRefusal("Invalid array", param=name)
        (element,) = typing.get_args(annotation) or (typing.Any,)
        for index, item in enumerate(value):
            _check(item, element, f"{name}[{index}]")
    elif origin in (dict, typing.Dict) or _untyped(annotation):  # noqa: UP006
        if not isinstance(value, dict):
            raise StripeRefusal("Invalid hash", param=name)
        args = typing.get_args(annotation)
        element = args[-1] if args else typing.Any
        for key, item in value.items():
            _check(item, element, f"{name}[{key}]")
    elif is_typeddict(annotation):
        if not isinstance(value, dict):
            raise StripeRefusal("Invalid object", param=name)
        _check_fields(value, annotation, name)


def _untyped(annotation: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    return isinstance(origin, type) and issubclass(origin, dict) and not is_typeddict(origin)


def _ruby(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# --- expansion -------------------------------------------------------------------------


def resource_class(kind: str) -> type | None:
    found = OBJECT_CLASSES.get(kind)
    if found is None:
        return None
    module, name = found
    return getattr(importlib.import_module(module), name)


def field_annotation(cls: type | None, name: str) -> Any:
    if cls is None:
        return None
    for klass in cls.__mro__:
        if name in (own := inspect.get_annotations(klass)):
            return own[name]
    return None


def is_expandable(annotation: Any) -> bool:
    """``ExpandableField[X]`` (``Union[str, X]``), possibly optional or in a list."""
    members = _flatten(annotation)
    return str in members and any(m is not str and m is not type(None) for m in members)


def nested_class(annotation: Any) -> type | None:
    """The StripeObject class a field holds (a nested class such as ``TotalDetails``)."""
    for member in _flatten(annotation):
        if isinstance(member, type) and issubclass(member, StripeObject):
            return member
    return None


def _flatten(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin in (list, typing.List):  # noqa: UP006
        return [m for arg in typing.get_args(annotation) for m in _flatten(arg)]
    if isinstance(annotation, typing.ForwardRef):
        return [annotation]
    return [origin or annotation]


def is_list_field(annotation: Any) -> bool:
    return any(
        isinstance(m, type) and issubclass(m, stripe.ListObject) for m in _flatten(annotation)
    )


# --- comparing shapes ------------------------------------------------------------------


def shape_differences(obj: Any, kind: str) -> list[str]:
    """Where ``obj`` differs in keys from Stripe's example of ``kind`` (empty: none)."""
    return _differences(obj, FIXTURES[kind], kind)


def _differences(obj: Any, example: Any, where: str) -> list[str]:
    kind = obj.get("object") if isinstance(obj, dict) else None
    if kind in FIXTURES and (not isinstance(example, dict) or example.get("object") != kind):
        example = FIXTURES[kind]  # an expanded object, or a list's element
    if obj is None or example is None or not isinstance(example, (dict, list)):
        return []
    if isinstance(example, list):
        if not isinstance(obj, list) or not example:
            return [] if isinstance(obj, list) else [f"{where}: not a list"]
        return [
            d for i, item in enumerate(obj) for d in _differences(item, example[0], f"{where}[{i}]")
        ]
    if isinstance(obj, str) and isinstance(example, dict) and "id" in example:
        return []  # an id where the example shows the object expanded
    if not isinstance(obj, dict):
        return [f"{where}: {type(obj).__name__} where Stripe has an object"]
    found = []
    extra, absent = set(obj) - set(example), set(example) - set(obj)
    if extra:
        found.append(f"{where}: keys Stripe does not send: {sorted(extra)}")
    if absent:
        found.append(f"{where}: keys Stripe sends that are missing: {sorted(absent)}")
    if example.get("object") == "event" and isinstance(obj.get("data"), dict):
        inner = obj["data"].get("object")
        if isinstance(inner, dict) and inner.get("object") in FIXTURES:
            found += shape_differences(inner, inner["object"])
        return found
    for key in set(obj) & set(example):
        if key not in FREE_FORM:
            found += _differences(obj[key], example[key], f"{where}.{key}")
    return found
