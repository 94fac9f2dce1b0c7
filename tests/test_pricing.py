"""Prices, checked against worked examples: every model at and around its boundaries. Pure
functions, no database."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from billing_app.cycles.pricing import (
    Line,
    advance_lines,
    arrears_lines,
    decimal_text,
    late_line,
    minimum_line,
    period_charges,
    price_lines,
    projected,
)
from billing_app.models import PlanPrice

# Tiers in minor units: 0.5 a unit up to 1,000; 0.4 a unit from 1,001 to 10,000, with a
# flat 100 for entering the tier; 0.3 a unit from 10,001 up.
TIERS = [
    {"up_to": 1000, "unit_amount": "0.5", "flat_amount": None},
    {"up_to": 10000, "unit_amount": "0.4", "flat_amount": "100"},
    {"up_to": None, "unit_amount": "0.3", "flat_amount": None},
]


def price(model="per_unit", **fields) -> PlanPrice:
    return PlanPrice(primitive=fields.pop("primitive", "llm.tokens"), model=model, **fields)


def total(lines: list[Line]) -> Decimal:
    return sum((line.amount for line in lines), Decimal(0))


def shape(lines: list[Line]) -> list[tuple[str, int, str]]:
    return [(line.line, line.quantity, decimal_text(line.unit_amount)) for line in lines]


@pytest.mark.parametrize(
    ("the_price", "used", "expected"),
    [
        # $0.002 per 1K tokens = 0.2 cents per 1,000 = 0.0002 cents a token.
        (price(unit_amount=Decimal("0.0002")), 1_500_000, "300"),
        (price(unit_amount=Decimal("0.0002")), 1, "0.0002"),
        (price(unit_amount=Decimal("0.0002")), 0, "0"),
        # Packages round up: every started package of 1,000 at 0.6.
        (price("package", unit_amount=Decimal("0.6"), package_size=1000), 1, "0.6"),
        (price("package", unit_amount=Decimal("0.6"), package_size=1000), 1000, "0.6"),
        (price("package", unit_amount=Decimal("0.6"), package_size=1000), 1001, "1.2"),
        (price("package", unit_amount=Decimal("0.6"), package_size=1000), 0, "0"),
        # Included quantity: deducted first.
        (price(unit_amount=Decimal(1), included_quantity=100), 100, "0"),
        (price(unit_amount=Decimal(1), included_quantity=100), 101, "1"),
        (price(unit_amount=Decimal(1), included_quantity=100), 99, "0"),
        (
            price("package", unit_amount=Decimal(5), package_size=10, included_quantity=5),
            15,
            "5",
        ),
        (
            price("package", unit_amount=Decimal(5), package_size=10, included_quantity=5),
            16,
            "10",
        ),
        # Graduated: each tier prices the units within it; a tier's flat amount is charged
        # once the tier is reached.
        (price("graduated", tiers=TIERS), 1, "0.5"),
        (price("graduated", tiers=TIERS), 1000, "500"),
        (price("graduated", tiers=TIERS), 1001, "600.4"),  # 500 + 0.4 + 100
        (price("graduated", tiers=TIERS), 10000, "4200"),  # 500 + 9000 x 0.4 + 100
        (price("graduated", tiers=TIERS), 10001, "4200.3"),
        (price("graduated", tiers=TIERS), 20000, "7200"),  # 4200 + 10000 x 0.3
        # Volume: the tier the quantity falls in prices every unit.
        (price("volume", tiers=TIERS), 1, "0.5"),
        (price("volume", tiers=TIERS), 1000, "500"),
        (price("volume", tiers=TIERS), 1001, "500.4"),  # 1001 x 0.4 + 100
        (price("volume", tiers=TIERS), 10000, "4100"),  # 10000 x 0.4 + 100
        (price("volume", tiers=TIERS), 10001, "3000.3"),  # 10001 x 0.3
        # Included units come off before the tiers count.
        (price("graduated", tiers=TIERS, included_quantity=500), 1500, "500"),
        (price("volume", tiers=TIERS, included_quantity=500), 1501, "500.4"),
    ],
)
def test_worked_examples(the_price, used, expected):
    assert decimal_text(total(arrears_lines(the_price, used))) == expected


def test_graduated_lines_name_each_tier_reached():
    lines = price_lines(price("graduated", tiers=TIERS), 10001)
    assert shape(lines) == [
        ("tier-1", 1000, "0.5"),
        ("tier-2", 9000, "0.4"),
        ("tier-2-flat", 1, "100"),
        ("tier-3", 1, "0.3"),
    ]
    assert lines[1].description == "tier 2 (1001 to 10000): 9000 units"
    assert lines[3].description == "tier 3 (10001 and up): 1 units"


def test_volume_lines_are_the_one_tier_reached():
    assert shape(price_lines(price("volume", tiers=TIERS), 1001)) == [
        ("tier-2", 1001, "0.4"),
        ("tier-2-flat", 1, "100"),
    ]
    assert shape(price_lines(price("volume", tiers=TIERS), 1000)) == [("tier-1", 1000, "0.5")]


def test_a_single_unbounded_tier_with_a_flat_fee():
    flat_only = price("graduated", tiers=[{"up_to": None, "unit_amount": "0", "flat_amount": "50"}])
    assert decimal_text(total(arrears_lines(flat_only, 1))) == "50"
    assert arrears_lines(flat_only, 0) == []  # nothing used, no flat fee


def test_in_advance_charges_the_included_quantity_and_the_rest_in_arrears():
    prepaid = price(unit_amount=Decimal("0.5"), included_quantity=1000, payment_terms="in_advance")
    advance = advance_lines(prepaid)
    assert shape(advance) == [("advance-units", 1000, "0.5")]
    assert advance[0].description == "1000 units, in advance"
    assert decimal_text(total(arrears_lines(prepaid, 1200))) == "100"
    assert arrears_lines(prepaid, 800) == []  # bought, not refunded
    # In arrears, the included quantity is free: nothing up front.
    assert advance_lines(price(unit_amount=Decimal("0.5"), included_quantity=1000)) == []


def test_the_minimum_commitment_tops_the_period_up():
    prices = [price(unit_amount=Decimal("0.0002"))]
    short = period_charges(prices, {"llm.tokens": 1_500_000}, minimum=Decimal(2000))
    assert [(line.line, decimal_text(line.amount)) for line in short.lines] == [
        ("units", "300"),
        ("minimum", "1700"),
    ]
    assert short.total == 2000
    enough = period_charges(prices, {"llm.tokens": 15_000_000}, minimum=Decimal(2000))
    assert [line.line for line in enough.lines] == ["units"]
    assert enough.total == 3000
    # Exactly at the minimum: no top-up line.
    assert minimum_line(Decimal(2000), Decimal(2000)) is None
    assert minimum_line(Decimal(0), None) is None


def test_advance_lines_count_towards_the_minimum():
    prepaid = price(unit_amount=Decimal(1), included_quantity=100, payment_terms="in_advance")
    charges = period_charges(
        [prepaid], {"llm.tokens": 150}, advance=advance_lines(prepaid), minimum=Decimal(120)
    )
    assert [(line.line, decimal_text(line.amount)) for line in charges.lines] == [
        ("advance-units", "100"),
        ("units", "50"),
    ]
    charges = period_charges(
        [prepaid], {"llm.tokens": 110}, advance=advance_lines(prepaid), minimum=Decimal(120)
    )
    assert decimal_text(charges.total) == "120"
    assert charges.lines[-1].line == "minimum"


@pytest.mark.parametrize(
    ("model", "billed", "late", "expected"),
    [
        ("graduated", 1000, 1, "100.4"),  # the first unit of tier 2 brings its flat fee
        ("graduated", 1001, 5, "2"),
        ("volume", 1000, 1, "0.4"),  # 500 -> 500.4
        ("volume", 10000, 1, "-1099.7"),  # 4100 -> 3000.3: volume can cost less
        ("graduated", 1001, -1, "-100.4"),  # refunded after the close
    ],
)
def test_late_usage_costs_the_difference_at_the_periods_price(model, billed, late, expected):
    line = late_line(price(model, tiers=TIERS), billed=billed, late=late, label="x", line="late-1")
    assert line is not None
    assert (line.quantity, decimal_text(line.amount)) == (1, expected)


def test_late_usage_that_changes_nothing_has_no_line():
    free = price(unit_amount=Decimal(1), included_quantity=100)
    assert late_line(free, billed=10, late=5, label="x", line="late-1") is None


@pytest.mark.parametrize(
    ("used", "elapsed_days", "length_days", "expected"),
    [
        (10, 1, 30, 300),
        (10, 3, 30, 100),
        (1, 3, 10, 3),  # 3.33 -> 3
        (1, 2, 5, 3),  # 2.5 -> 3: halves up
        (7, 30, 30, 7),  # the whole period has run
        (7, 0, 30, 7),  # nothing elapsed: nothing to extrapolate from
        (0, 5, 30, 0),
        (1, 0.2 / 86400, 30, 30),  # seconds in: taken as a day's use, not millions of times
        (10, 0.5, 1, 10),  # a period shorter than a day is not projected past its length
        (2**62, 1, 30, 2**63 - 1),  # at most what a counter holds
    ],
)
def test_projection_is_linear(used, elapsed_days, length_days, expected):
    assert (
        projected(used, elapsed=timedelta(days=elapsed_days), length=timedelta(days=length_days))
        == expected
    )


def test_amounts_keep_twelve_decimals_and_print_without_exponents():
    tiny = price(unit_amount=Decimal("0.000000000001"))
    assert decimal_text(total(arrears_lines(tiny, 3))) == "0.000000000003"
    assert decimal_text(Decimal("1E+3")) == "1000"
    assert decimal_text(Decimal("-0.000")) == "0"


def test_lines_survive_json():
    (line,) = price_lines(price("package", unit_amount=Decimal("0.6"), package_size=1000), 1500)
    assert Line.from_json(line.as_json()) == line
    assert line.as_json()["amount"] == "1.2"
