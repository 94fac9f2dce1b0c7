"""Plans as code: the catalog (Account Kits and plans) read from a file, compared with the
database, applied through the catalog's services in one transaction, and written back
out in the same shape, so that an export applied again changes nothing.

A file (JSON, or YAML) holds ``{"billing": {...}}``; anything else at its top level is
left alone (the file may be a project's whole ``config.json``)::

    {"billing": {
        "gauges": ["storage"],
        "kits": {"pro": {"name": "Pro", "primitives": {"api.calls": {"ratePerMinute": 600}}}},
        "plans": {
            "free": {"apiCalls": 1000, "llmTokens": 10000, "storage": 104857600},
            "pro": {"name": "Pro", "accountKitId": "pro", "stripePriceId": "price_pro",
                    "quotas": {"api.calls": 100000, "llm.tokens": 1000000},
                    "gauges": {"storage": 10737418240}, "overage": {"llm.tokens": "0.0002"},
                    "perSeat": [], "features": ["sso"], "period": "month",
                    "billingCadence": "P1M", "currency": "usd", "active": true,
                    "stripeMeterEvent": ""}}}}

A plan's fields are those of ``POST /v1/plans`` (its product, prices, credits and trial
too), plus ``gauges`` (limits on levels) and ``kit`` (the plan's Account Kit defined in
place: ``{key?, name?, primitives}``); ``billing.products`` names products by key. Any other
member is a metric, the seed contract's shorthand for a quota: a camelCase name
(``apiCalls`` is the primitive ``api.calls``) or a primitive slug, with a limit. Metrics
named in ``billing.gauges`` are gauges, the others counters. A field the file leaves out
takes its default (``name`` is the key, no kit, no price, month, P1M, usd, active): the
file is the whole truth about the plans it names. A plan the database has and the file
does not is retired (``active`` false, never deleted: records point at it); an Account
Kit or a product the file does not name is left as it is.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction

from ..exceptions import InvalidInput
from ..models import ENDED_STATUSES, AccountKit, Plan, PlanPrice, Product, Subscription, TrialEnd
from ..periods import PERIODS, parse_cadence
from ..validation import MAX_BIGINT, MAX_INT
from . import services
from .names import metric_primitive
from .selectors import account_kit_list, plan_list, price_json, product_list

PLAN_FIELDS = (
    "name",
    "productId",
    "invoiceDisplayName",
    "accountKitId",
    "stripePriceId",
    "stripeMeterEvent",
    "period",
    "billingCadence",
    "currency",
    "active",
    "quotas",
    "gauges",
    "perSeat",
    "overage",
    "prices",
    "minimumCommitment",
    "creditCosts",
    "credits",
    "trialDays",
    "trialEndAction",
    "trialFallbackPlan",
    "features",
)
DEFAULTS: dict[str, Any] = {
    "productId": None,
    "invoiceDisplayName": "",
    "accountKitId": None,
    "stripePriceId": "",
    "stripeMeterEvent": "",
    "period": "month",
    "billingCadence": "P1M",
    "currency": "usd",
    "active": True,
    "quotas": {},
    "gauges": {},
    "perSeat": [],
    "overage": {},
    "prices": [],
    "minimumCommitment": None,
    "creditCosts": {},
    "credits": None,
    "trialDays": 0,
    "trialEndAction": TrialEnd.CONVERT.value,
    "trialFallbackPlan": None,
    "features": [],
}
PRICE_DEFAULTS: dict[str, Any] = {
    "model": PlanPrice.PriceModel.PER_UNIT.value,
    "unitAmount": None,
    "packageSize": None,
    "tiers": [],
    "includedQuantity": 0,
    "paymentTerms": PlanPrice.PaymentTerms.IN_ARREARS.value,
}
_PRIMITIVE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")

Catalog = dict[str, dict[str, dict[str, Any]]]
"""``{"products": {key: product}, "kits": {key: kit}, "plans": {key: plan}}``, every field
present, in export form."""


Path = tuple[str | int, ...]


def path_of(*parts: str | int) -> str:
    """``billing.plans.pro.quotas["api.calls"]``, ``...features[0]``: where a problem is,
    in the file."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if _IDENTIFIER.match(part) else f"[{json.dumps(part)}]"
    return text.lstrip(".")


# --- reading a file ----------------------------------------------------------------------


def catalog_parse(text: str, *, syntax: str = "json") -> Any:
    """The data of a file's text (``json`` or ``yaml``); ``InvalidInput`` naming the line
    when it does not parse."""
    if syntax == "yaml":
        import yaml

        try:
            return yaml.safe_load(text)
        except RecursionError:
            raise InvalidInput({"file": ["Nested too deeply."]}) from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "file"
            raise InvalidInput(
                {where: [f"Not YAML: {getattr(error, 'problem', error)}."]}
            ) from None
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                duplicates.append(key)
            seen[key] = value
        return seen

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        raise InvalidInput({where: [f"Not JSON: {error.msg}."]}) from None
    except RecursionError:
        raise InvalidInput({"file": ["Nested too deeply."]}) from None
    if duplicates:
        raise InvalidInput(
            {"file": [f"{json.dumps(key)} appears twice in one object." for key in duplicates]}
        )
    return data


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class _Reader:
    """Collects every problem of a file, each under its path, before anything is applied."""

    problems: dict[str, list[str]] = field(default_factory=dict)

    def problem(self, path: Path, message: str) -> None:
        self.problems.setdefault(path_of(*path) or "file", []).append(message)

    def object(self, path: Path, value: Any) -> dict[str, Any] | None:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return value
        self.problem(path, "must be an object with string keys")
        return None

    def string(self, path: Path, value: Any, *, most: int, empty: bool = True) -> Any:
        if isinstance(value, str) and len(value) <= most and (empty or value):
            if "\x00" in value or not _encodable(value):
                self.problem(path, "must be text: no NUL character, no lone surrogate")
                return None
            return value
        what = "a string" if empty else "a non-empty string"
        self.problem(path, f"must be {what} of at most {most} characters")
        return None

    def count(self, path: Path, value: Any, *, most: int = MAX_BIGINT) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= most:
            return value
        self.problem(path, f"must be a non-negative integer (at most {most})")
        return None

    def primitive(self, path: Path, value: Any) -> str | None:
        if isinstance(value, str) and _PRIMITIVE.match(value):
            return value
        self.problem(path, "must be a primitive: lowercase letters, digits, '.', '_', '-'")
        return None

    def slugs(self, path: Path, value: Any, check: Callable[[Path, Any], Any]) -> list[str]:
        if not isinstance(value, list):
            self.problem(path, "must be a list")
            return []
        found = [check((*path, index), item) for index, item in enumerate(value)]
        return sorted({item for item in found if item is not None})


def catalog_read(data: Any) -> Catalog:
    """The catalog a file's data describes, in export form; ``InvalidInput`` with every
    problem, each under its path in the file (``billing.plans.pro.apiCalls``)."""
    reader = _Reader()
    billing = None
    if reader.object((), data) is not None:
        if "billing" not in data:
            reader.problem(("billing",), "is missing")
        else:
            billing = reader.object(("billing",), data["billing"])
    if billing is None:
        raise InvalidInput(reader.problems)
    gauges = _gauge_names(reader, billing.get("gauges", []))
    products: dict[str, dict[str, Any]] = {}
    listed = reader.object(("billing", "products"), billing.get("products", {})) or {}
    for key, product in listed.items():
        read_product = _read_product(reader, ("billing", "products", key), key, product)
        if read_product is not None:
            products[key] = read_product
    kits: dict[str, dict[str, Any]] = {}
    for key, kit in (reader.object(("billing", "kits"), billing.get("kits", {})) or {}).items():
        read = _read_kit(reader, ("billing", "kits", key), key, kit)
        if read is not None:
            kits[key] = read
    plans: dict[str, dict[str, Any]] = {}
    if "plans" not in billing:
        reader.problem(("billing", "plans"), "is missing")
    for key, plan in (reader.object(("billing", "plans"), billing.get("plans", {})) or {}).items():
        read = _read_plan(reader, ("billing", "plans", key), key, plan, gauges, kits, products)
        if read is not None:
            plans[key] = read
    _check_across_plans(reader, plans)
    if reader.problems:
        raise InvalidInput(reader.problems)
    return {"products": products, "kits": kits, "plans": plans}


def _read_product(reader: _Reader, path: Path, key: str, product: Any) -> dict[str, Any] | None:
    _key(reader, path, key)
    if reader.object(path, product) is None:
        return None
    for unknown in sorted(set(product) - {"name"}):
        reader.problem((*path, unknown), "is not a field of a product (name)")
    return {"name": reader.string((*path, "name"), product.get("name", key), most=200, empty=False)}


def _gauge_names(reader: _Reader, value: Any) -> set[str]:
    """``billing.gauges``: metric names or primitives, as primitives."""
    names = set()
    for index, name in enumerate(value if isinstance(value, list) else [None]):
        primitive = _metric(name) if isinstance(name, str) else None
        if primitive is None:
            where: Path = (
                ("billing", "gauges", index) if isinstance(value, list) else ("billing", "gauges")
            )
            reader.problem(
                where, "must be a list of metric names (storage, apiCalls) or primitives"
            )
            continue
        names.add(primitive)
    return names


def _metric(name: str) -> str | None:
    """A plan member's primitive: itself when it is a primitive slug, else the primitive of
    its camelCase metric name (``apiCalls`` -> ``api.calls``)."""
    if _PRIMITIVE.match(name):
        return name
    primitive = metric_primitive(name)
    return primitive if primitive and _PRIMITIVE.match(primitive) else None


def _read_kit(
    reader: _Reader, path: Path, key: str, kit: Any, *, inline: bool = False
) -> dict[str, Any] | None:
    _key(reader, (*path, "key") if inline else path, key)
    if reader.object(path, kit) is None:
        return None
    for unknown in sorted(set(kit) - {"name", "primitives", *(["key"] if inline else [])}):
        reader.problem((*path, unknown), "is not a field of an Account Kit (name, primitives)")
    name = reader.string((*path, "name"), kit.get("name", key), most=200, empty=False)
    primitives: dict[str, dict[str, int | None]] = {}
    listed = reader.object((*path, "primitives"), kit.get("primitives", {})) or {}
    for primitive, options in listed.items():
        where = (*path, "primitives", primitive)
        if reader.primitive(where, primitive) is None:
            continue
        rate = options.get("ratePerMinute") if isinstance(options, dict) else options
        if isinstance(options, dict) and set(options) - {"ratePerMinute"}:
            reader.problem(where, "takes only ratePerMinute")
        elif (
            rate is not None and reader.count((*where, "ratePerMinute"), rate, most=MAX_INT) is None
        ):
            continue
        primitives[primitive] = {"ratePerMinute": rate}
    return {"name": name, "primitives": dict(sorted(primitives.items()))}


def _key(reader: _Reader, path: Path, key: str) -> None:
    if not _is_key(key):
        reader.problem(path, "is not a key: a slug of letters, digits, '-' or '_', at most 64")


def _is_key(value: Any) -> bool:
    try:
        if not isinstance(value, str) or not 0 < len(value) <= 64:
            raise ValidationError("not a short string")
        validate_slug(value)
    except ValidationError:
        return False
    return True


def _read_plan(
    reader: _Reader,
    path: Path,
    key: str,
    plan: Any,
    gauge_names: set[str],
    kits: dict[str, dict[str, Any]],
    products: dict[str, dict[str, Any]],
) -> dict[str, Any] | None:
    _key(reader, path, key)
    if reader.object(path, plan) is None:
        return None
    read: dict[str, Any] = {"name": key, **DEFAULTS}
    for name in ("quotas", "gauges", "perSeat", "overage", "prices", "creditCosts", "features"):
        read[name] = type(DEFAULTS[name])()
    where: dict[str, Path] = {}  # primitive -> where it was given, to name a second mention
    for member, value in plan.items():
        at = (*path, member)
        if member in PLAN_FIELDS or member == "kit":
            continue
        primitive = _metric(member)
        field_like = difflib.get_close_matches(member, [*PLAN_FIELDS, "kit"], n=1, cutoff=0.8)
        if field_like:
            # A misspelt field would otherwise become a quota on a primitive of its name.
            reader.problem(
                at,
                f"is not a plan field: did you mean {field_like[0]}? (A metric of this name "
                "goes in quotas or gauges.)",
            )
        elif primitive is None:
            reader.problem(
                at,
                "is neither a plan field nor a metric (a camelCase name such as apiCalls, or "
                "a primitive such as api.calls)",
            )
        elif reader.count(at, value) is not None:
            kind = "gauges" if primitive in gauge_names else "quotas"
            _limit(reader, read, where, kind, primitive, value, at)
    for kind in ("quotas", "gauges"):
        listed = reader.object((*path, kind), plan.get(kind, {})) or {}
        for primitive, value in listed.items():
            at = (*path, kind, primitive)
            if reader.primitive(at, primitive) and reader.count(at, value) is not None:
                if kind == "quotas" and primitive in gauge_names:
                    reader.problem(
                        at, f"{primitive} is a gauge (billing.gauges): limit it in gauges"
                    )
                    continue
                _limit(reader, read, where, kind, primitive, value, at)
    if "name" in plan:
        read["name"] = reader.string((*path, "name"), plan["name"], most=200, empty=False)
    for name, most in (("stripePriceId", 255), ("stripeMeterEvent", 100)):
        if name in plan:
            read[name] = reader.string((*path, name), plan[name], most=most)
    if "period" in plan:
        if plan["period"] in PERIODS:
            read["period"] = plan["period"]
        else:
            reader.problem((*path, "period"), f"must be one of {', '.join(PERIODS)}")
    if "billingCadence" in plan:
        try:
            parse_cadence(plan["billingCadence"])
            read["billingCadence"] = plan["billingCadence"]
        except ValueError as error:
            reader.problem((*path, "billingCadence"), str(error))
    if "currency" in plan:
        currency = plan["currency"]
        if (
            isinstance(currency, str)
            and len(currency) == 3
            and currency.isascii()
            and currency.isalpha()
        ):
            read["currency"] = currency.lower()
        else:
            reader.problem((*path, "currency"), "must be a three-letter ISO 4217 code (usd)")
    if "active" in plan:
        if isinstance(plan["active"], bool):
            read["active"] = plan["active"]
        else:
            reader.problem((*path, "active"), "must be true or false")
    limited = {*read["quotas"], *read["gauges"]}
    if "perSeat" in plan:
        read["perSeat"] = reader.slugs(
            (*path, "perSeat"), plan["perSeat"], lambda at, p: _limited(reader, at, p, limited)
        )
    if "overage" in plan:
        prices = reader.object((*path, "overage"), plan["overage"]) or {}
        for primitive, price in prices.items():
            at = (*path, "overage", primitive)
            if _limited(reader, at, primitive, limited) is not None:
                value = _price(reader, at, price)
                if value is not None:
                    read["overage"][primitive] = value
    if "features" in plan:
        read["features"] = reader.slugs((*path, "features"), plan["features"], _feature(reader))
    read["accountKitId"] = _plan_kit(reader, path, key, plan, kits)
    _read_commercial_terms(reader, path, key, plan, read, products)
    for name in ("quotas", "gauges", "overage", "creditCosts"):
        read[name] = dict(sorted(read[name].items()))
    return {name: read[name] for name in PLAN_FIELDS}


def _read_commercial_terms(
    reader: _Reader,
    path: Path,
    key: str,
    plan: dict[str, Any],
    read: dict[str, Any],
    products: dict[str, dict[str, Any]],
) -> None:
    """The product, prices, credits and trial of a plan. Their shapes and amounts are
    checked here; the rules between them (a tiered price's tiers ascend, a primitive is
    priced once) by the catalog's services when the file is applied, under the same paths."""
    if "productId" in plan:
        product = plan["productId"]
        known = _is_key(product) and (
            product in products or Product.objects.filter(key=product).exists()
        )
        if product is None or known:
            read["productId"] = product
        else:
            reader.problem(
                (*path, "productId"), f"no product {product!r} in the file or the database"
            )
    if "invoiceDisplayName" in plan:
        read["invoiceDisplayName"] = reader.string(
            (*path, "invoiceDisplayName"), plan["invoiceDisplayName"], most=200
        )
    if "prices" in plan:
        listed = plan["prices"]
        if not isinstance(listed, list):
            reader.problem((*path, "prices"), "must be a list")
            listed = []
        prices = [_read_price(reader, (*path, "prices", i), p) for i, p in enumerate(listed)]
        read["prices"] = sorted(
            (price for price in prices if price is not None and price["primitive"]),
            key=lambda price: price["primitive"],
        )
    if plan.get("minimumCommitment") is not None:
        read["minimumCommitment"] = _price(
            reader, (*path, "minimumCommitment"), plan["minimumCommitment"]
        )
    if "creditCosts" in plan:
        costs = reader.object((*path, "creditCosts"), plan["creditCosts"]) or {}
        for primitive, cost in costs.items():
            at = (*path, "creditCosts", primitive)
            if reader.primitive(at, primitive) and reader.count(at, cost) is not None:
                read["creditCosts"][primitive] = cost
    if plan.get("credits") is not None:
        credits = reader.object((*path, "credits"), plan["credits"]) or {}
        for unknown in sorted(set(credits) - {"perPeriod", "rolloverCap", "rolloverDays"}):
            reader.problem(
                (*path, "credits", unknown), "is not perPeriod, rolloverCap or rolloverDays"
            )
        read["credits"] = {
            "perPeriod": reader.count((*path, "credits", "perPeriod"), credits.get("perPeriod", 0)),
            "rolloverCap": reader.count(
                (*path, "credits", "rolloverCap"), credits.get("rolloverCap", 0)
            ),
            "rolloverDays": None,
        }
        if credits.get("rolloverDays") is not None:
            read["credits"]["rolloverDays"] = reader.count(
                (*path, "credits", "rolloverDays"), credits["rolloverDays"], most=3660
            )
    if "trialDays" in plan:
        read["trialDays"] = reader.count((*path, "trialDays"), plan["trialDays"], most=730)
    if "trialEndAction" in plan:
        if plan["trialEndAction"] in TrialEnd.values:
            read["trialEndAction"] = plan["trialEndAction"]
        else:
            reader.problem(
                (*path, "trialEndAction"), f"must be one of {', '.join(TrialEnd.values)}"
            )
    if plan.get("trialFallbackPlan") is not None:
        fallback = plan["trialFallbackPlan"]
        if fallback == key or not _is_key(fallback):
            reader.problem((*path, "trialFallbackPlan"), "must be the key of another plan")
        else:
            read["trialFallbackPlan"] = fallback


def _read_price(reader: _Reader, path: Path, price: Any) -> dict[str, Any] | None:
    """A price in export form: every field present, amounts as normalized decimals."""
    if reader.object(path, price) is None:
        return None
    for unknown in sorted(set(price) - {"primitive", *PRICE_DEFAULTS}):
        reader.problem((*path, unknown), f"is not a field of a price ({', '.join(PRICE_DEFAULTS)})")
    read = {"primitive": reader.primitive((*path, "primitive"), price.get("primitive"))}
    read.update({name: price.get(name, default) for name, default in PRICE_DEFAULTS.items()})
    if read["unitAmount"] is not None:
        read["unitAmount"] = _price(reader, (*path, "unitAmount"), read["unitAmount"])
    if not isinstance(read["tiers"], list):
        reader.problem((*path, "tiers"), "must be a list of {upTo, unitAmount, flatAmount}")
        return None
    tiers = []
    for index, tier in enumerate(read["tiers"]):
        at = (*path, "tiers", index)
        if reader.object(at, tier) is None:
            continue
        for unknown in sorted(set(tier) - {"upTo", "unitAmount", "flatAmount"}):
            reader.problem((*at, unknown), "is not upTo, unitAmount or flatAmount")
        amounts = {
            name: None if tier.get(name) is None else _price(reader, (*at, name), tier[name])
            for name in ("unitAmount", "flatAmount")
        }
        tiers.append({"upTo": tier.get("upTo"), **amounts})
    read["tiers"] = tiers
    return read


def _limit(
    reader: _Reader,
    read: dict[str, Any],
    where: dict[str, Path],
    kind: str,
    primitive: str,
    value: int,
    at: Path,
) -> None:
    if primitive in where:
        reader.problem(at, f"{primitive} is given twice (also at {path_of(*where[primitive])})")
        return
    where[primitive] = at
    read[kind][primitive] = value


def _limited(reader: _Reader, at: Path, primitive: Any, limited: set[str]) -> Any:
    if reader.primitive(at, primitive) is None:
        return None
    if primitive not in limited:
        reader.problem(at, f"{primitive} has no quota or gauge in this plan")
        return None
    return primitive


def _price(reader: _Reader, at: Path, price: Any) -> str | None:
    try:
        value = Decimal(str(price)) if isinstance(price, (int, float, str)) else None
    except InvalidOperation:
        value = None
    if (
        isinstance(price, bool)
        or value is None
        or not value.is_finite()
        or value < 0
        or value >= 10**12
        or value != value.quantize(Decimal("1e-12"))
    ):
        reader.problem(at, "must be a unit price: a decimal >= 0 with at most 12 decimal places")
        return None
    return _decimal(value)


def _decimal(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _feature(reader: _Reader) -> Callable[[Path, Any], str | None]:
    def check(at: Path, feature: Any) -> str | None:
        try:
            if not isinstance(feature, str) or not 0 < len(feature) <= 64:
                raise ValidationError("not a short string")
            validate_slug(feature)
        except ValidationError:
            reader.problem(at, "must be a feature slug such as 'sso'")
            return None
        return feature

    return check


def _plan_kit(
    reader: _Reader,
    path: Path,
    key: str,
    plan: dict[str, Any],
    kits: dict[str, dict[str, Any]],
) -> str | None:
    """The plan's kit key: ``accountKitId``, or the kit it defines in ``kit`` (added to
    ``kits``, keyed by its ``key`` or the plan's)."""
    if "kit" in plan and "accountKitId" in plan:
        reader.problem((*path, "kit"), "give accountKitId or kit, not both")
        return None
    if "kit" in plan:
        kit = reader.object((*path, "kit"), plan["kit"])
        if kit is None:
            return None
        kit_key = kit.get("key", key)
        if not isinstance(kit_key, str):
            reader.problem((*path, "kit", "key"), "must be a string")
            return None
        read = _read_kit(reader, (*path, "kit"), kit_key, kit, inline=True)
        if read is None:
            return None
        if kit_key in kits and kits[kit_key] != read:
            reader.problem((*path, "kit"), f"defines kit {kit_key!r} otherwise than elsewhere")
        kits[kit_key] = read
        return kit_key
    kit_key = plan.get("accountKitId")
    if kit_key is None or (isinstance(kit_key, str) and kit_key in kits):
        return kit_key
    if not _is_key(kit_key) or not AccountKit.objects.filter(key=kit_key).exists():
        reader.problem(
            (*path, "accountKitId"), f"no Account Kit {kit_key!r} in the file or the database"
        )
        return None
    return kit_key


def _check_across_plans(reader: _Reader, plans: dict[str, dict[str, Any]]) -> None:
    """A price belongs to one plan; a metric is a counter in every plan or a gauge in
    every plan (a plan change must not turn a level into usage per window)."""
    prices: dict[str, str] = {}
    kinds: dict[str, tuple[str, str]] = {}
    for key, plan in plans.items():
        price = plan["stripePriceId"]
        if price and price in prices:
            reader.problem(
                ("billing", "plans", key, "stripePriceId"), f"is plan {prices[price]!r}'s too"
            )
        prices.setdefault(price, key)
        for kind in ("quotas", "gauges"):
            for primitive in plan[kind]:
                other = kinds.setdefault(primitive, (kind, key))
                if other[0] != kind:
                    reader.problem(
                        ("billing", "plans", key, kind, primitive),
                        f"is in {other[0]} of plan {other[1]!r}: a metric is one kind in "
                        "every plan",
                    )


# --- the database's catalog --------------------------------------------------------------


def catalog_current() -> Catalog:
    """The database's catalog, every product, kit and plan, in the file's (export) form."""
    products = {product.key: {"name": product.name} for product in product_list().order_by("key")}
    kits = {
        kit.key: {
            "name": kit.name,
            "primitives": {
                p.primitive: {"ratePerMinute": p.rate_per_minute} for p in kit.primitives.all()
            },
        }
        for kit in account_kit_list().order_by("key")
    }
    plans = {}
    for plan in plan_list().order_by("key"):
        quotas = sorted(plan.quotas.all(), key=lambda q: q.primitive)
        credits = getattr(plan, "credits", None)
        plans[plan.key] = {
            "name": plan.name,
            "productId": plan.product.key if plan.product else None,
            "invoiceDisplayName": plan.invoice_display_name,
            "accountKitId": plan.account_kit.key if plan.account_kit else None,
            "stripePriceId": plan.stripe_price_id,
            "stripeMeterEvent": plan.stripe_meter_event,
            "period": plan.period,
            "billingCadence": plan.billing_cadence,
            "currency": plan.currency,
            "active": plan.active,
            "quotas": {q.primitive: q.limit for q in quotas if q.kind == "counter"},
            "gauges": {q.primitive: q.limit for q in quotas if q.kind == "gauge"},
            "perSeat": [q.primitive for q in quotas if q.per_seat],
            "overage": {
                q.primitive: _decimal(q.overage_unit_price)
                for q in quotas
                if q.overage == "bill" and q.overage_unit_price is not None
            },
            "prices": [price_json(price) for price in plan.prices.all()],
            "minimumCommitment": _decimal_or_none(plan.minimum_commitment),
            "creditCosts": {cost.primitive: cost.credits for cost in plan.credit_costs.all()},
            "credits": None
            if credits is None
            else {
                "perPeriod": credits.per_period,
                "rolloverCap": credits.rollover_cap,
                "rolloverDays": credits.rollover_days,
            },
            "trialDays": plan.trial_days,
            "trialEndAction": plan.trial_end_action,
            "trialFallbackPlan": plan.trial_fallback_plan.key if plan.trial_fallback_plan else None,
            "features": sorted(f.feature for f in plan.features.all()),
        }
    return {"products": products, "kits": kits, "plans": plans}


def _decimal_or_none(value: Decimal | None) -> str | None:
    return None if value is None else _decimal(value)


def catalog_export() -> dict[str, Any]:
    """The file that describes the database's catalog: applying it changes nothing."""
    return {"billing": catalog_current()}


def catalog_dump(data: Any, *, syntax: str = "json") -> str:
    if syntax == "yaml":
        import yaml

        return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


# --- comparing and applying ----------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One kit or plan to create, update or retire, and its fields' moves
    (path, before, after)."""

    kind: str  # "product" | "kit" | "plan"
    key: str
    action: str  # "create" | "update" | "retire"
    fields: tuple[tuple[str, Any, Any], ...] = ()
    # Live subscriptions on a plan this change retires: it needs ``prune``.
    customers: int = 0

    @property
    def needs_prune(self) -> bool:
        return self.customers > 0

    def lines(self, *, prune: bool = False) -> list[str]:
        mark = {"create": "+", "update": "~", "retire": "-"}[self.action]
        head = f"{mark} {self.kind} {self.key}"
        if self.action == "retire" and not self.fields:
            head += ": not in the file, retired (active: false)"
        if self.customers:
            head += f" [{self.customers} live subscription(s) on it: " + (
                "their customers keep it]" if prune else "needs --prune]"
            )
        return [head] + [
            f"    {name}: {_show(before)} -> {_show(after)}"
            if self.action != "create"
            else f"    {name}: {_show(after)}"
            for name, before, after in self.fields
        ]


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def catalog_diff(desired: Catalog, current: Catalog | None = None) -> list[Change]:
    """What applying ``desired`` would change in the database: products, kits, then the
    plans, each plan after the plan its trial falls back to. Reads only."""
    current = catalog_current() if current is None else current
    changes = []
    for kind in ("product", "kit"):
        for key, item in sorted(desired[f"{kind}s"].items()):
            changes.extend(_compare(kind, key, current[f"{kind}s"].get(key), item))
    for key in _fallbacks_first(desired["plans"]):
        changes.extend(_compare("plan", key, current["plans"].get(key), desired["plans"][key]))
    for key, plan in sorted(current["plans"].items()):
        if key not in desired["plans"] and plan["active"]:
            changes.append(Change("plan", key, "retire", customers=_live_on(key)))
    return changes


def _fallbacks_first(plans: dict[str, dict[str, Any]]) -> list[str]:
    """The plans' keys in order, each plan after the file's plan its trial falls back to."""
    ordered: list[str] = []

    def visit(key: str, seen: tuple[str, ...]) -> None:
        fallback = plans[key]["trialFallbackPlan"]
        if fallback in plans and fallback not in seen:
            visit(fallback, (*seen, key))
        if key not in ordered:
            ordered.append(key)

    for key in sorted(plans):
        visit(key, ())
    return ordered


def _compare(kind: str, key: str, before: Any, after: dict[str, Any]) -> list[Change]:
    if before == after:
        return []
    if before is None:
        return [Change(kind, key, "create", tuple((name, None, v) for name, v in after.items()))]
    fields = []
    for name, value in after.items():
        was = before.get(name)
        if isinstance(value, dict) and isinstance(was, dict):
            for member in sorted({*value, *was}):
                if value.get(member) != was.get(member):
                    fields.append((path_of(name, member), was.get(member), value.get(member)))
        elif value != was:
            fields.append((name, was, value))
    retiring = kind == "plan" and before["active"] and not after["active"]
    customers = _live_on(key) if retiring else 0
    return [Change(kind, key, "retire" if retiring else "update", tuple(fields), customers)]


def _live_on(key: str) -> int:
    """Subscriptions on plan ``key`` that have not ended."""
    return Subscription.objects.filter(plan__key=key).exclude(status__in=ENDED_STATUSES).count()


def catalog_apply(desired: Catalog, *, prune: bool = False, dry_run: bool = False) -> list[Change]:
    """Make the database's catalog what ``desired`` describes, through the catalog's
    services (so entitlement versions move), in one transaction: every change or none.
    Retiring a plan that customers are on is refused unless ``prune``. ``dry_run`` makes
    the changes and rolls them back, so a refusal by a service shows too. Answers the
    changes; nothing when there is nothing to change."""
    with transaction.atomic():
        changes = catalog_diff(desired)
        refused = {
            path_of("billing", "plans", change.key): [
                f"{change.customers} live subscription(s) are on plan {change.key!r}: pass "
                "--prune to retire it (its customers keep it), or name it in the file."
            ]
            for change in changes
            if change.needs_prune and not prune
        }
        if refused:
            raise InvalidInput(refused)
        for change in changes:
            _apply(change, desired)
        if dry_run:
            transaction.set_rollback(True)
    return changes


def _apply(change: Change, desired: Catalog) -> None:
    where = ("billing", f"{change.kind}s", change.key)
    try:
        if change.kind == "product":
            services.product_upsert(key=change.key, name=desired["products"][change.key]["name"])
        elif change.kind == "kit":
            kit = desired["kits"][change.key]
            services.account_kit_upsert(
                key=change.key,
                name=kit["name"],
                primitives={p: o["ratePerMinute"] for p, o in kit["primitives"].items()},
            )
        elif change.key not in desired["plans"]:
            name = Plan.objects.values_list("name", flat=True).get(key=change.key)
            services.plan_upsert(key=change.key, name=name, active=False)
        else:
            plan = desired["plans"][change.key]
            services.plan_upsert(
                key=change.key,
                name=plan["name"],
                account_kit_id=plan["accountKitId"],
                stripe_price_id=plan["stripePriceId"],
                stripe_meter_event=plan["stripeMeterEvent"],
                period=plan["period"],
                billing_cadence=plan["billingCadence"],
                currency=plan["currency"],
                active=plan["active"],
                quotas=plan["quotas"],
                gauges=plan["gauges"],
                per_seat=plan["perSeat"],
                overage={p: Decimal(price) for p, price in plan["overage"].items()},
                features=plan["features"],
                product_id=plan["productId"],
                invoice_display_name=plan["invoiceDisplayName"],
                prices=[_snake(price) for price in plan["prices"]],
                minimum_commitment=plan["minimumCommitment"],
                credit_costs=plan["creditCosts"],
                credits=None if plan["credits"] is None else _snake(plan["credits"]),
                trial_days=plan["trialDays"],
                trial_end_action=plan["trialEndAction"],
                trial_fallback_plan=plan["trialFallbackPlan"],
            )
    except InvalidInput as error:
        raise InvalidInput(
            {path_of(*where, *_parts(name)): messages for name, messages in error.fields.items()}
        ) from None


def _parts(field: str) -> list[str | int]:
    """A service's field (``prices.0.unit_amount``) as parts of a path in the file
    (``prices``, 0, ``unitAmount``)."""
    return [int(part) if part.isdigit() else _camel(part) for part in field.split(".")]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _snake(data: dict[str, Any]) -> dict[str, Any]:
    """A file's object as a service takes it: snake_case keys, tiers too."""
    return {
        re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower(): [_snake(tier) for tier in value]
        if name == "tiers"
        else value
        for name, value in data.items()
    }


def catalog_file_errors(error: InvalidInput) -> list[str]:
    """One line per problem: ``billing.plans.pro.apiCalls: must be ...``."""
    return [
        f"{where}: {message}" for where, messages in error.fields.items() for message in messages
    ]
