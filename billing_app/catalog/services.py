"""The only writer of the catalog: Account Kits, plans, their quotas and features. Every
change raises the entitlement version of the customers it applies to, in its transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from ..entitlements import entitlements_changed_for_kit, entitlements_changed_for_plan
from ..models import (
    AccountKit,
    KitPrimitive,
    Plan,
    PlanCreditCost,
    PlanCredits,
    PlanFeature,
    PlanQuota,
)
from ..periods import PERIODS, parse_cadence
from ..validation import (
    MAX_INT,
    UNSET,
    check_count,
    check_feature,
    check_primitive,
    full_clean,
    invalid,
)


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


@transaction.atomic
def plan_upsert(
    *,
    key: str,
    name: str,
    account_kit_id: str | int | None = UNSET,
    stripe_price_id: str = UNSET,
    quotas: Mapping[str, int] = UNSET,
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
) -> tuple[Plan, bool]:
    """Create or update the plan ``key``. Arguments left UNSET keep their current value.

    ``quotas`` (slug -> limit per window) replaces the plan's whole set when given;
    ``per_seat`` names the quotas that count per seat (limit x seats); ``overage`` (slug ->
    unit price in minor units) makes those quotas soft: calls go on past them and the
    excess is billed; the others block. ``features`` replaces the plan's feature set.
    ``credit_costs`` (slug -> credits per unit) makes those primitives draw credits, and
    ``credits`` (``{"per_period", "rollover_cap", "rollover_days"}``, or None for none) gives
    the plan's customers credits every billing period; each replaces what was there.
    """
    changes: dict[str, Any] = {"name": name}
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
    plan.save()
    if quotas is not UNSET:
        plan.quotas.exclude(primitive__in=quotas).delete()
        for primitive, limit in quotas.items():
            PlanQuota.objects.update_or_create(
                plan=plan, primitive=primitive, defaults={"limit": limit}
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


def _unit_price(primitive: str, price: Any) -> Decimal:
    try:
        value = Decimal(str(price))
    except (InvalidOperation, ValueError):
        value = Decimal("NaN")
    if isinstance(price, bool) or not value.is_finite() or value < 0 or value >= 10**12:
        raise invalid("overage", f"The unit price of {primitive} must be a decimal >= 0.")
    return value.quantize(Decimal("1e-12"))
