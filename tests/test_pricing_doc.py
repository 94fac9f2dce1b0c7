"""docs/howto/pricing.md says what the app does: its tier table is computed, its plan is
created through the API as written, and its upcoming-charges answer is the API's."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from billing_app.cycles.pricing import arrears_lines, decimal_text
from billing_app.models import PlanPrice

from .utils import at, use

DOC = Path(__file__).resolve().parent.parent / "docs" / "howto" / "pricing.md"


def after_marker(name: str) -> str:
    """The text between ``<!-- test: name -->`` and the next blank line after its block."""
    text = DOC.read_text()
    start = text.index(f"<!-- test: {name} -->") + len(f"<!-- test: {name} -->")
    rest = text[start:].lstrip("\n")
    if rest.startswith("```"):
        return rest.split("```", 2)[1].removeprefix("json\n")
    return rest.split("\n\n", 1)[0]


def doc_tiers() -> list[dict]:
    """The page's ``{"tiers": [...]}`` sample, as the model's fields."""
    samples = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S)]
    (tiers,) = [sample["tiers"] for sample in samples if sample.keys() == {"tiers"}]
    return [
        {
            "up_to": tier["upTo"],
            "unit_amount": tier["unitAmount"],
            **({"flat_amount": tier["flatAmount"]} if "flatAmount" in tier else {}),
        }
        for tier in tiers
    ]


def test_the_tier_table():
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in after_marker("tiers").splitlines()[2:]
    ]
    assert len(rows) >= 5
    for used, graduated, volume in rows:
        for model, expected in (("graduated", graduated), ("volume", volume)):
            price = PlanPrice(primitive="x", model=model, tiers=doc_tiers())
            lines = arrears_lines(price, int(used))
            amount = decimal_text(sum((line.amount for line in lines), Decimal(0)))
            assert amount == expected, (model, used)


@pytest.mark.django_db
def test_the_developer_plan_and_its_upcoming_charges(api, customer, clock):
    assert api.post("/v1/products", {"key": "llm", "name": "LLM platform"}, format="json")
    plan = json.loads(after_marker("plan"))
    created = api.post("/v1/plans", plan, format="json")
    assert created.status_code == 201, created.content
    expected = json.loads(after_marker("upcoming"))

    start, end = at("2026-04-01 00:00"), at("2026-05-01 00:00")
    subscribed = api.put(
        f"/v1/users/{customer.pk}/billing/subscription",
        {"planKey": "developer", "currentPeriodStart": start, "currentPeriodEnd": end},
        format="json",
    )
    assert subscribed.status_code == 200, subscribed.content
    tokens = re.findall(r"has used ([\d,]+) input tokens and\s+([\d,]+) output", DOC.read_text())
    (input_tokens, output_tokens) = (int(n.replace(",", "")) for n in tokens[0])
    use(customer, input_tokens, at("2026-04-02 10:00"), primitive="llm.input-tokens")
    use(customer, output_tokens, at("2026-04-05 10:00"), primitive="llm.output-tokens")
    clock.set("2026-04-11 00:00")

    answer = api.get(f"/v1/users/{customer.pk}/billing/upcoming")

    assert answer.status_code == 200
    assert answer.json() == expected
