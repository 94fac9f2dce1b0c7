"""The only writer of the catalog: Account Kits, plans, their quotas and features. Every
change raises the entitlement version of the customers it applies to, in its transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from ..conf import billing_settings
from ..entitlements import entitlements_changed_for_kit, entitlements_changed_for_plan
from ..models import (
    AccountKit,
    KitPrimitive,
    Plan,
    PlanCreditCost,
    PlanCredits,
    PlanFeature,
    PlanPrice,
    PlanQuota,
    Product,
    TrialEnd,
)
from ..periods import PERIODS, parse_cadence
from ..validation import (
    MAX_BIGINT,
    MAX_INT,
    UNSET,
    check_count,
    check_feature,
    check_primitive,
    full_clean,
    invalid,
)

MAX_TRIAL_DAYS = 730
PriceModel = PlanPrice.PriceModel
PaymentTerms = PlanPrice.PaymentTerms


def account_kit_get(*, ref: str | int) -> AccountKit:
    """A kit by id or by key, for arguments that accept either."""
    text = str(ref)
    lookup: dict[str, int | str] = (
        {"pk": int(text)} if text.isascii() and text.isdigit() else {"key": text}
    )
    try:
        return AccountKit.objects.get(**lookup)
    except (AccountKit.DoesNotExist, ValueError, OverflowError):
        raise invalid("account_kit_id", f"No account kit with id or key {ref!r}.") from None


@transaction.atomic
def account_kit_upsert(
    *, key: str, name: str, primitives: Mapping[str, int | None] | None = None
) -> tuple[AccountKit, bool]:
    """Create or update the kit ``key``. ``primitives`` (slug -> calls per minute or None)
    replaces the kit's whole set when given."""
    checked: dict[str, int | None] = {}
    for primitive, rate in (primitives or {}).items():
        check_primitive("primitives", primitive)
        if rate is not None:
            check_count("primitives", rate, what=f"{primitive}: ratePerMinute", maximum=MAX_INT)
        checked[primitive] = rate

    # Checked before get_or_create writes the row: PostgreSQL refuses a key too long for
    # its column with a DataError, not a field error.
    full_clean(AccountKit(key=key, name=name))
    kit, created = AccountKit.objects.select_for_update().get_or_create(
        key=key, defaults={"name": name}
    )
    kit.name = name
    kit.save()
    if primitives is not None:
        kit.primitives.exclude(primitive__in=checked).delete()
        for primitive, rate in checked.items():
            KitPrimitive.objects.update_or_create(
                kit=kit, primitive=primitive, defaults={"rate_per_minute": rate}
            )
    entitlements_changed_for_kit(kit=kit)
    return kit, created


def product_get(*, ref: str | int) -> Product:
    """A product by id or by key."""
    text = str(ref)
    lookup: dict[str, Any] = (
        {"pk": int(text)} if text.isascii() and text.isdigit() else {"key": text}
    )
    try:
        return Product.objects.get(**lookup)
    except (Product.DoesNotExist, ValueError, OverflowError):
        raise invalid("product_id", f"No product with id or key {ref!r}.") from None


@transaction.atomic
def product_upsert(*, key: str, name: str) -> tuple[Product, bool]:
    """Create or update the product ``key``."""
    full_clean(Product(key=key, name=name))
    product, created = Product.objects.select_for_update().get_or_create(
        key=key, defaults={"name": name}
    )
    product.name = name
    product.save()
    return product, created


@transaction.atomic
def plan_upsert(
    *,
    key: str,
    name: str,
    product_id: str | int | None = UNSET,
    invoice_display_name: str = UNSET,
    account_kit_id: str | int | None = UNSET,
    stripe_price_id: str = UNSET,
    quotas: Mapping[str, int] = UNSET,
    gauges: Mapping[str, int] = UNSET,
    per_seat: Iterable[str] = UNSET,
    features: Iterable[str] = UNSET,
    period: str = UNSET,
    billing_cadence: str = UNSET,
    currency: str = UNSET,
    active: bool = UNSET,
    overage: Mapping[str, Any] = UNSET,
    stripe_meter_event: str = UNSET,
    credit_costs: Mapping[str, int] = UNSET,
    credits: Mapping[str, Any] | None = UNSET,
    prices: Iterable[Mapping[str, Any]] = UNSET,
    minimum_commitment: Any = UNSET,
    overage_spend_cap: Any = UNSET,
    trial_days: int = UNSET,
    trial_end_action: str = UNSET,
    trial_fallback_plan: str | None = UNSET,
) -> tuple[Plan, bool]:
    """Create or update the plan ``key``. Arguments left UNSET keep their current value.

    ``quotas`` (slug -> limit per window) replaces the plan's counters when given, and
    ``gauges`` (slug -> limit on the level) its gauges; ``per_seat`` names the quotas or
    gauges that count per seat (limit x seats); ``overage`` (slug -> unit price in minor
    units) makes those soft: use goes on past them and the excess is billed (a gauge's per
    unit of its average excess level over the billing period); the others block.
    ``features`` replaces the plan's feature set. ``credit_costs`` (slug -> credits per
    unit) makes those primitives draw credits, and ``credits`` (``{"per_period",
    "rollover_cap", "rollover_days"}``, or None for none) gives the plan's customers
    credits every billing period; each replaces what was there.

    ``prices`` replaces the plan's prices per primitive when given: each ``{primitive,
    model, unit_amount, package_size, tiers: [{up_to, unit_amount, flat_amount}],
    included_quantity, payment_terms}`` (see ``PlanPrice``); a primitive priced here may
    not also have an ``overage`` price. ``minimum_commitment`` is the least the prices
    charge per period. ``overage_spend_cap`` (minor units, None for no cap) is the most
    the billed overage of a quota window may cost: a metered call that would take it past
    the cap is refused, as past a quota. ``trial_days``, ``trial_end_action`` (convert,
    fallback, stop) and ``trial_fallback_plan`` (a plan key) set the plan's trial. The
    currency must be the one of the Stripe price as dj-stripe has it synced, when it has it.
    """
    changes: dict[str, Any] = {"name": name}
    if product_id is not UNSET:
        changes["product"] = (
            None if product_id is None or product_id == "" else product_get(ref=product_id)
        )
    if invoice_display_name is not UNSET:
        changes["invoice_display_name"] = invoice_display_name or ""
    if minimum_commitment is not UNSET:
        changes["minimum_commitment"] = (
            None
            if minimum_commitment is None
            else _amount("minimum_commitment", minimum_commitment, what="The minimum commitment")
        )
    if overage_spend_cap is not UNSET:
        changes["overage_spend_cap"] = (
            None
            if overage_spend_cap is None
            else _amount("overage_spend_cap", overage_spend_cap, what="The overage spend cap")
        )
    if trial_days is not UNSET:
        changes["trial_days"] = check_count(
            "trial_days", trial_days, what="The trial's length in days", maximum=MAX_TRIAL_DAYS
        )
    if trial_end_action is not UNSET:
        if trial_end_action not in TrialEnd.values:
            raise invalid(
                "trial_end_action",
                f"{trial_end_action!r} is not one of {', '.join(TrialEnd.values)}.",
            )
        changes["trial_end_action"] = trial_end_action
    if trial_fallback_plan is not UNSET:
        if trial_fallback_plan in (None, ""):
            changes["trial_fallback_plan"] = None
        else:
            if trial_fallback_plan == key:
                raise invalid("trial_fallback_plan", "A trial cannot fall back to its own plan.")
            fallback = Plan.objects.filter(key=trial_fallback_plan).first()
            if fallback is None:
                raise invalid("trial_fallback_plan", f"No plan with key {trial_fallback_plan!r}.")
            changes["trial_fallback_plan"] = fallback
    if prices is not UNSET:
        prices = _check_prices(prices)
    if stripe_meter_event is not UNSET:
        changes["stripe_meter_event"] = stripe_meter_event or ""
    if account_kit_id is not UNSET:
        changes["account_kit"] = (
            None
            if account_kit_id is None or account_kit_id == ""
            else account_kit_get(ref=account_kit_id)
        )
    if stripe_price_id is not UNSET:
        changes["stripe_price_id"] = stripe_price_id or ""
        taken = Plan.objects.filter(stripe_price_id=stripe_price_id).exclude(key=key).first()
        if stripe_price_id and taken:
            raise invalid("stripe_price_id", f"Plan {taken.key!r} already uses this price.")
    if period is not UNSET:
        if period not in PERIODS:
            raise invalid("period", f"{period!r} is not one of {', '.join(PERIODS)}.")
        changes["period"] = period
    if billing_cadence is not UNSET:
        try:
            parse_cadence(billing_cadence)
        except ValueError as error:
            raise invalid("billing_cadence", str(error)) from None
        changes["billing_cadence"] = billing_cadence
    if currency is not UNSET:
        if not (
            isinstance(currency, str)
            and len(currency) == 3
            and currency.isascii()
            and currency.isalpha()
        ):
            raise invalid("currency", f"{currency!r} is not a three-letter ISO 4217 code.")
        changes["currency"] = currency.lower()
    if active is not UNSET:
        changes["active"] = bool(active)
    if quotas is not UNSET:
        quotas = {
            check_primitive("quotas", primitive): check_count(
                "quotas", limit, what=f"the quota of {primitive}"
            )
            for primitive, limit in quotas.items()
        }
    if gauges is not UNSET:
        gauges = {
            check_primitive("gauges", primitive): check_count(
                "gauges", limit, what=f"the limit of {primitive}"
            )
            for primitive, limit in gauges.items()
        }
        both = sorted(set(gauges) & set(quotas or {})) if quotas is not UNSET else []
        if both:
            raise invalid("gauges", f"{', '.join(both)}: a quota or a gauge, not both.")
    if per_seat is not UNSET:
        per_seat = {check_primitive("per_seat", primitive) for primitive in per_seat}
    wanted_features = (
        None if features is UNSET else {check_feature("features", feature) for feature in features}
    )
    if overage is not UNSET:
        overage = {
            check_primitive("overage", primitive): _unit_price(primitive, price)
            for primitive, price in overage.items()
        }
    if credit_costs is not UNSET:
        credit_costs = {
            check_primitive("credit_costs", primitive): check_count(
                "credit_costs", cost, what=f"the credit cost of {primitive}", minimum=1
            )
            for primitive, cost in credit_costs.items()
        }
    if credits is not UNSET and credits is not None:
        credits = _plan_credits(credits)

    plan = Plan.objects.select_for_update().filter(key=key).first()
    created = plan is None
    if plan is None:
        plan = Plan(key=key)
    for field, value in changes.items():
        setattr(plan, field, value)
    full_clean(plan)
    _check_currency(plan)
    if plan.trial_end_action == TrialEnd.FALLBACK and not (
        plan.trial_fallback_plan_id or billing_settings.FALLBACK_PLAN
    ):
        raise invalid(
            "trial_end_action",
            "A trial that falls back needs trialFallbackPlan, or BILLING_FALLBACK_PLAN set.",
        )
    plan.save()
    for kind, limits in ((PlanQuota.Kind.COUNTER, quotas), (PlanQuota.Kind.GAUGE, gauges)):
        if limits is UNSET:
            continue
        plan.quotas.filter(kind=kind).exclude(primitive__in=limits).delete()
        for primitive, limit in limits.items():
            PlanQuota.objects.update_or_create(
                plan=plan, primitive=primitive, defaults={"limit": limit, "kind": kind}
            )
    known = set(plan.quotas.values_list("primitive", flat=True))
    for name_, given in (("per_seat", per_seat), ("overage", overage)):
        if given is not UNSET and set(given) - known:
            unknown = ", ".join(sorted(set(given) - known))
            raise invalid(name_, f"No quota of this plan for {unknown}.")
    if per_seat is not UNSET:
        plan.quotas.update(per_seat=False)
        plan.quotas.filter(primitive__in=per_seat).update(per_seat=True)
    if overage is not UNSET:
        for quota in plan.quotas.all():
            price = overage.get(quota.primitive)
            quota.overage = PlanQuota.Overage.BLOCK if price is None else PlanQuota.Overage.BILL
            quota.overage_unit_price = price
            quota.save(update_fields=["overage", "overage_unit_price"])
    if wanted_features is not None:
        plan.features.exclude(feature__in=wanted_features).delete()
        held = set(plan.features.values_list("feature", flat=True))
        for feature in sorted(wanted_features - held):
            PlanFeature.objects.create(plan=plan, feature=feature)
    if credit_costs is not UNSET:
        plan.credit_costs.exclude(primitive__in=credit_costs).delete()
        for primitive, cost in credit_costs.items():
            PlanCreditCost.objects.update_or_create(
                plan=plan, primitive=primitive, defaults={"credits": cost}
            )
    if credits is None:
        PlanCredits.objects.filter(plan=plan).delete()
    elif credits is not UNSET:
        PlanCredits.objects.update_or_create(plan=plan, defaults=credits)
    if prices is not UNSET:
        plan.prices.all().delete()
        PlanPrice.objects.bulk_create(PlanPrice(plan=plan, **price) for price in prices)
    _check_priced_once(plan, prices_given=prices is not UNSET)
    entitlements_changed_for_plan(plan=plan)
    return plan, created


def _plan_credits(credits: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(credits) - {"per_period", "rollover_cap", "rollover_days"}
    if unknown:
        raise invalid("credits", f"Unknown fields: {', '.join(sorted(unknown))}.")
    checked = {
        "per_period": check_count("credits", credits.get("per_period", 0), what="perPeriod"),
        "rollover_cap": check_count("credits", credits.get("rollover_cap", 0), what="rolloverCap"),
        "rollover_days": credits.get("rollover_days"),
    }
    if checked["rollover_days"] is not None:
        check_count("credits", checked["rollover_days"], what="rolloverDays", maximum=3660)
    return checked


def _check_priced_once(plan: Plan, *, prices_given: bool) -> None:
    """A primitive billed by a price and by an overage price would be billed twice."""
    priced = list(plan.prices.values_list("primitive", flat=True))
    both = set(priced) & set(
        plan.quotas.filter(overage=PlanQuota.Overage.BILL).values_list("primitive", flat=True)
    )
    if not both:
        return
    if prices_given:
        index = min(priced.index(primitive) for primitive in both)
        field = f"prices.{index}.primitive"
    else:
        field = "overage"
    raise invalid(
        field,
        f"{', '.join(sorted(both))} has a price and an overage price: both would bill the "
        "same units. Keep one.",
    )


def _check_currency(plan: Plan) -> None:
    """The plan's currency is its Stripe price's, as dj-stripe has it synced (no network:
    a price dj-stripe has not synced is not checked)."""
    if not plan.stripe_price_id:
        return
    from djstripe.models import Price as StripePrice

    currency = (
        StripePrice.objects.filter(id=plan.stripe_price_id)
        .values_list("currency", flat=True)
        .first()
    )
    if currency and currency.lower() != plan.currency:
        raise invalid(
            "currency",
            f"Stripe price {plan.stripe_price_id} is in {currency.lower()}, not "
            f"{plan.currency}: a plan's currency is its Stripe price's.",
        )


def _check_prices(prices: Any) -> list[dict[str, Any]]:
    if isinstance(prices, (str, bytes, Mapping)) or not isinstance(prices, Iterable):
        raise invalid("prices", "A list of prices.")
    checked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, price in enumerate(prices):
        field = f"prices.{index}"
        if not isinstance(price, Mapping):
            raise invalid(field, "A price is an object.")
        primitive = check_primitive(f"{field}.primitive", price.get("primitive"))
        if primitive in seen:
            raise invalid(f"{field}.primitive", f"{primitive} is priced twice.")
        seen.add(primitive)
        checked.append({"primitive": primitive, **_check_price(field, price)})
    return checked


def _check_price(field: str, price: Mapping[str, Any]) -> dict[str, Any]:
    model = price.get("model") or PriceModel.PER_UNIT
    if model not in PriceModel.values:
        raise invalid(f"{field}.model", f"{model!r} is not one of {', '.join(PriceModel.values)}.")
    terms = price.get("payment_terms") or PaymentTerms.IN_ARREARS
    if terms not in PaymentTerms.values:
        raise invalid(
            f"{field}.payment_terms", f"{terms!r} is not one of {', '.join(PaymentTerms.values)}."
        )
    included = price.get("included_quantity") or 0
    check_count(f"{field}.included_quantity", included, what="The included quantity")
    if terms == PaymentTerms.IN_ADVANCE and not included:
        raise invalid(
            f"{field}.included_quantity",
            "A price paid in advance charges its included quantity when the period opens: "
            "give one.",
        )
    unit_amount, package_size, tiers = (
        price.get("unit_amount"),
        price.get("package_size"),
        price.get("tiers") or [],
    )
    tiered = model in (PriceModel.GRADUATED, PriceModel.VOLUME)
    if tiered:
        if unit_amount is not None:
            raise invalid(f"{field}.unit_amount", f"A {model} price has its amounts in tiers.")
        tiers = _check_tiers(f"{field}.tiers", tiers)
    else:
        if tiers:
            raise invalid(f"{field}.tiers", f"A {model} price has no tiers.")
        if unit_amount is None:
            raise invalid(f"{field}.unit_amount", f"A {model} price needs a unit amount.")
        unit_amount = _amount(f"{field}.unit_amount", unit_amount, what="The unit amount")
    if model == PriceModel.PACKAGE:
        if package_size is None:
            raise invalid(f"{field}.package_size", "A package price needs a package size.")
        check_count(f"{field}.package_size", package_size, what="The package size", minimum=1)
    elif package_size is not None:
        raise invalid(f"{field}.package_size", "Only a package price has a package size.")
    return {
        "model": model,
        "unit_amount": unit_amount,
        "package_size": package_size,
        "tiers": tiers,
        "included_quantity": included,
        "payment_terms": terms,
    }


def _check_tiers(field: str, tiers: Any) -> list[dict[str, Any]]:
    if isinstance(tiers, (str, bytes, Mapping)) or not isinstance(tiers, Iterable):
        raise invalid(field, "A list of tiers.")
    tiers = list(tiers)
    if not tiers:
        raise invalid(field, "A tiered price needs at least one tier.")
    checked = []
    below = 0
    for index, tier in enumerate(tiers):
        here = f"{field}.{index}"
        if not isinstance(tier, Mapping):
            raise invalid(here, "A tier is an object: {upTo, unitAmount, flatAmount}.")
        up_to = tier.get("up_to")
        last = index == len(tiers) - 1
        if up_to is None and not last:
            raise invalid(f"{here}.up_to", "Only the last tier is unbounded (upTo null).")
        if up_to is not None:
            if last:
                raise invalid(f"{here}.up_to", "The last tier is unbounded: upTo null.")
            check_count(f"{here}.up_to", up_to, what="upTo", minimum=1, maximum=MAX_BIGINT)
            if up_to <= below:
                raise invalid(
                    f"{here}.up_to", f"Tiers ascend: upTo must be above {below}, not {up_to}."
                )
            below = up_to
        if tier.get("unit_amount") is None:
            raise invalid(f"{here}.unit_amount", "A tier needs a unit amount (0 for free).")
        unit = _amount(f"{here}.unit_amount", tier["unit_amount"], what="The unit amount")
        flat = tier.get("flat_amount")
        flat = (
            None if flat is None else _amount(f"{here}.flat_amount", flat, what="The flat amount")
        )
        checked.append(
            {
                "up_to": up_to,
                "unit_amount": _text(unit),
                "flat_amount": None if flat is None else _text(flat),
            }
        )
    return checked


def _text(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _amount(field: str, value: Any, *, what: str) -> Decimal:
    """An amount in minor units: a decimal >= 0 with at most 12 places (Stripe's limit)."""
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        amount = Decimal("NaN")
    if (
        isinstance(value, bool)
        or not amount.is_finite()
        or amount < 0
        or amount >= 10**12
        or amount != amount.quantize(Decimal("1e-12"))
    ):
        raise invalid(
            field,
            f"{what} must be a decimal from 0 to 10^12, with at most 12 decimals, not {value!r}.",
        )
    return amount.quantize(Decimal("1e-12"))


def _check_feature(feature: Any) -> str:
    from django.core.exceptions import ValidationError
    from django.core.validators import validate_slug

    try:
        if not isinstance(feature, str) or not 0 < len(feature) <= 64:
            raise ValidationError("not a short string")
        validate_slug(feature)
    except ValidationError:
        raise invalid("features", f"{feature!r} is not a feature slug such as 'sso'.") from None
    return feature


def _unit_price(primitive: str, price: Any) -> Decimal:
    try:
        value = Decimal(str(price))
    except (InvalidOperation, ValueError):
        value = Decimal("NaN")
    if isinstance(price, bool) or not value.is_finite() or value < 0 or value >= 10**12:
        raise invalid("overage", f"The unit price of {primitive} must be a decimal >= 0.")
    return value.quantize(Decimal("1e-12"))
