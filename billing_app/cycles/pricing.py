"""What a billing period's usage costs under a plan's prices: pure functions, no database.

Every amount is a ``Decimal`` in the plan's currency's minor units (cents), exact: Stripe
rounds each invoice item to a whole minor unit when it totals the invoice.

For each priced primitive:

- the included quantity is deducted from the period's usage first; the rest (the billable
  quantity) is priced by the model, its tiers counted from zero;
- ``per_unit``: billable x unit amount; ``package``: every started package of
  ``package_size`` units (rounded up) x unit amount; ``graduated``: the units within each
  tier at that tier's unit amount, plus the flat amount of each tier reached; ``volume``:
  every billable unit at the unit amount of the tier the billable quantity falls in, plus
  that tier's flat amount;
- payment terms ``in_advance``: the included quantity is not free but bought, priced by
  the same model, when the period opens; usage past it is charged when the period ends,
  as in arrears. ``in_arrears``: the included quantity is free.

A plan's minimum commitment tops the period's charges (in advance and in arrears, of the
period's own usage) up to it with one more line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Context, Decimal, localcontext
from typing import Any, Protocol

from ..validation import MAX_BIGINT

ZERO = Decimal(0)
PLACES = Decimal("1e-12")
# Exact for every amount a price can make: up to 2^63 units (19 digits) at up to 10^12 minor
# units with 12 decimals (24 digits). Python's default of 28 digits would round them, and
# refuse to quantize the largest.
MONEY = Context(prec=80)
MINIMUM = "minimum"


class Price(Protocol):
    """What pricing reads of a price (a ``PlanPrice``, saved or not)."""

    primitive: str
    model: str
    unit_amount: Decimal | None
    package_size: int | None
    tiers: list[dict[str, Any]]
    included_quantity: int
    payment_terms: str


@dataclass(frozen=True)
class Line:
    """One charge: ``quantity`` x ``unit_amount``. ``line`` names it within its primitive
    ("units", "packages", "tier-2", "tier-2-flat", ...), stable from one computation to the
    next, so it keys the invoice item."""

    primitive: str
    line: str
    description: str
    quantity: int
    unit_amount: Decimal

    @property
    def amount(self) -> Decimal:
        with localcontext(MONEY):
            return self.quantity * self.unit_amount

    def as_json(self) -> dict[str, Any]:
        return {
            "primitive": self.primitive or None,
            "line": self.line,
            "description": self.description,
            "quantity": self.quantity,
            "unitAmount": decimal_text(self.unit_amount),
            "amount": decimal_text(self.amount),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Line:
        return cls(
            primitive=data["primitive"] or "",
            line=data["line"],
            description=data["description"],
            quantity=data["quantity"],
            unit_amount=Decimal(data["unitAmount"]),
        )


@dataclass(frozen=True)
class Charges:
    lines: list[Line] = field(default_factory=list)

    @property
    def total(self) -> Decimal:
        return total_of(self.lines)


def total_of(lines: Iterable[Line]) -> Decimal:
    """The sum of the lines' amounts, exact."""
    with localcontext(MONEY):
        return sum((line.amount for line in lines), ZERO)


def decimal_text(value: Decimal) -> str:
    """``Decimal("0.200000000000")`` -> ``"0.2"``; never an exponent."""
    with localcontext(MONEY):
        text = f"{value.quantize(PLACES).normalize():f}"
    return "0" if text in ("-0", "") else text


def _tiers(price: Price) -> list[tuple[int | None, Decimal, Decimal]]:
    return [
        (tier.get("up_to"), Decimal(tier["unit_amount"]), Decimal(tier.get("flat_amount") or 0))
        for tier in price.tiers
    ]


def _span(lower: int, upper: int | None) -> str:
    return f"{lower + 1} to {upper}" if upper is not None else f"{lower + 1} and up"


def price_lines(price: Price, quantity: int) -> list[Line]:
    """The lines of ``quantity`` units under ``price``'s model, counted from zero."""
    if quantity <= 0:
        return []
    primitive = price.primitive
    if price.model == "per_unit":
        unit = Decimal(price.unit_amount or 0)
        return [Line(primitive, "units", f"{quantity} units", quantity, unit)]
    if price.model == "package":
        size = int(price.package_size or 1)
        packages = -(-quantity // size)  # every started package, in integers
        unit = Decimal(price.unit_amount or 0)
        return [
            Line(
                primitive,
                "packages",
                f"{quantity} units: {packages} x {size}-unit packages",
                packages,
                unit,
            )
        ]
    tiers = _tiers(price)
    lines = []
    if price.model == "graduated":
        lower = 0
        for number, (upper, unit, flat) in enumerate(tiers, start=1):
            if quantity <= lower:
                break
            within = (quantity if upper is None else min(quantity, upper)) - lower
            span = _span(lower, upper)
            lines.append(
                Line(
                    primitive,
                    f"tier-{number}",
                    f"tier {number} ({span}): {within} units",
                    within,
                    unit,
                )
            )
            if flat:
                lines.append(
                    Line(
                        primitive,
                        f"tier-{number}-flat",
                        f"tier {number} ({span}): flat fee",
                        1,
                        flat,
                    )
                )
            if upper is None:
                break
            lower = upper
        return lines
    if price.model == "volume":
        lower = 0
        for number, (upper, unit, flat) in enumerate(tiers, start=1):
            if upper is None or quantity <= upper:
                span = _span(lower, upper)
                lines.append(
                    Line(
                        primitive,
                        f"tier-{number}",
                        f"tier {number} ({span}): {quantity} units",
                        quantity,
                        unit,
                    )
                )
                if flat:
                    lines.append(
                        Line(
                            primitive,
                            f"tier-{number}-flat",
                            f"tier {number} ({span}): flat fee",
                            1,
                            flat,
                        )
                    )
                return lines
            lower = upper
        raise ValueError(f"The tiers of {primitive} end before {quantity} units.")
    raise ValueError(f"Unknown price model {price.model!r}.")


def billable(price: Price, used: int) -> int:
    return max(0, used - int(price.included_quantity or 0))


def arrears_lines(price: Price, used: int) -> list[Line]:
    """What ``used`` units in a period cost when it ends: past the included quantity."""
    return price_lines(price, billable(price, used))


def advance_lines(price: Price) -> list[Line]:
    """What a period costs when it opens: the included quantity of an in-advance price."""
    if price.payment_terms != "in_advance":
        return []
    lines = price_lines(price, int(price.included_quantity or 0))
    return [
        Line(
            line.primitive,
            f"advance-{line.line}",
            f"{line.description}, in advance",
            line.quantity,
            line.unit_amount,
        )
        for line in lines
    ]


def late_line(price: Price, *, billed: int, late: int, label: str, line: str) -> Line | None:
    """What ``late`` more units (negative: refunded) add to a period in which ``billed``
    units were already charged, at that period's price: the difference of the two totals,
    as one line. None when it adds nothing."""
    before = total_of(arrears_lines(price, billed))
    after = total_of(arrears_lines(price, billed + late))
    if after == before:
        return None
    with localcontext(MONEY):
        difference = after - before
    return Line(price.primitive, line, f"{late} units reported late for {label}", 1, difference)


def minimum_line(total: Decimal, minimum: Decimal | None) -> Line | None:
    """The top-up of a period whose charges come to ``total``, short of ``minimum``."""
    if minimum is None or total >= minimum:
        return None
    with localcontext(MONEY):
        return Line("", MINIMUM, "minimum commitment top-up", 1, minimum - total)


def period_charges(
    prices: Iterable[Price],
    used: Mapping[str, int],
    *,
    advance: Iterable[Line] = (),
    minimum: Decimal | None = None,
) -> Charges:
    """All the charges of one period: ``advance`` (charged when it opened), its usage
    (``used``: primitive -> units) in arrears, and the minimum commitment's top-up."""
    lines = list(advance)
    for price in sorted(prices, key=lambda p: p.primitive):
        lines.extend(arrears_lines(price, used.get(price.primitive, 0)))
    top_up = minimum_line(Charges(lines).total, minimum)
    return Charges([*lines, top_up] if top_up else lines)


# A projection takes the usage so far as at least a day's: the first calls of a period,
# seconds after it opened, would otherwise project millions of times their number.
SHORTEST_BASIS = timedelta(days=1)


def projected(used: int, *, elapsed: timedelta, length: timedelta) -> int:
    """``used`` so far, extrapolated linearly over the whole period: ``used x length /
    elapsed``, to the nearest unit (halves up), with ``elapsed`` taken as at least a day
    (``SHORTEST_BASIS``); at most 2^63 - 1."""
    if elapsed <= timedelta(0) or elapsed >= length:
        return used
    step = timedelta(microseconds=1)
    whole, part = length // step, min(max(elapsed, SHORTEST_BASIS), length) // step
    return min((2 * used * whole + part) // (2 * part), MAX_BIGINT)
