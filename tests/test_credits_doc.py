"""docs/howto/credits.md says what the app does: its Developer plan on credits, followed
through the API from April to June (a grant each period, expiry and rollover, the rate, an
auto top-up, a refusal), answers what the page pastes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from billing_app.client import billing
from billing_app.exceptions import RateLimited
from billing_app.metering.services import usage_reserve
from billing_app.models import OutboxMessage
from billing_app.subscriptions.services import periods_advance

from .utils import at, synced_price

DOC = Path(__file__).resolve().parent.parent / "docs" / "howto" / "credits.md"

pytestmark = pytest.mark.django_db


def after_marker(name: str) -> str:
    """The block (or paragraph) after ``<!-- test: name -->``."""
    text = DOC.read_text()
    marker = f"<!-- test: {name} -->"
    rest = text[text.index(marker) + len(marker) :].lstrip("\n")
    if rest.startswith("```"):
        return rest.split("```", 2)[1].removeprefix("json\n")
    return rest.split("\n\n", 1)[0]


def sample(name: str) -> dict:
    return json.loads(after_marker(name))


def shown(answer: dict) -> dict:
    """A credits answer as the page shows it: without ids and reasons."""
    grants = [{k: v for k, v in g.items() if k not in ("id", "reason")} for g in answer["grants"]]
    return {**answer, "grants": grants}


def test_the_developer_plan_on_credits(api, customer, clock, stripe_stub):
    # The catalog, as the page creates it.
    assert api.post("/v1/account-kits", sample("kit"), format="json").status_code == 201
    created = api.post("/v1/plans", sample("plan"), format="json")
    assert created.status_code == 201, created.content
    stripe_stub.price("price_topup_5k", unit_amount=500, type="one_time", recurring=None)
    synced_price(stripe_stub, "price_topup_5k", "usd")
    assert api.post("/v1/credit-packs", sample("pack"), format="json").status_code == 201
    # The page's auto top-up line, with its figures.
    pack, below, cap = re.fullmatch(
        r'`billing\.for_customer\(customer\)\.set_auto_top_up\("([\w-]+)", '
        r"below=(\d+), monthly_cap=(\d+)\)`",
        after_marker("auto-top-up"),
    ).groups()
    billing.for_customer(customer).set_auto_top_up(pack, below=int(below), monthly_cap=int(cap))

    clock.set("2026-04-01 00:00")
    subscribed = api.put(
        f"/v1/users/{customer.pk}/billing/subscription",
        json.loads(
            re.search(r"`(\{\"planKey\": \"developer\".*?\})`", DOC.read_text(), re.S)[1].replace(
                "\n", " "
            )
        ),
        format="json",
    )
    assert subscribed.status_code == 200, subscribed.content

    def call(primitive, thousands):
        return usage_reserve(customer_id=customer.pk, primitive=primitive, quantity=thousands)

    def credits():
        answer = api.get(f"/v1/users/{customer.pk}/billing/credits")
        assert answer.status_code == 200
        return shown(answer.json())

    # April: 1,500K input and 500K output tokens.
    clock.set("2026-04-10 12:00")
    call("llm.input-ktokens", 1500)
    call("llm.output-ktokens", 500)
    assert credits()["balance"] == 4000

    # May 2: what billing_close_cycles does at the month's end, then the answer.
    clock.set("2026-05-02 00:00")
    periods_advance(at=at("2026-05-02 00:00"))
    assert credits() == sample("may-2")

    # May 20: the rate, then one big call that buys the pack.
    clock.set("2026-05-20 12:00")
    for _ in range(100):
        call("llm.input-ktokens", 1)
    with pytest.raises(RateLimited):
        call("llm.input-ktokens", 1)
    clock.set("2026-05-20 12:01")  # the next minute
    call("llm.input-ktokens", 5500)
    assert credits() == sample("may-20")
    refused = api.post(
        f"/v1/users/{customer.pk}/billing/usage",
        {"primitive": "llm.output-ktokens", "quantity": 1000},
        format="json",
    )
    assert refused.status_code == 402
    assert refused.json() == sample("refusal")
    (charge,) = OutboxMessage.objects.filter(key__startswith="billing-topup-")
    assert charge.key == f"billing-topup-{customer.pk}-2026-05-1"
    assert {k: charge.payload[k] for k in ("customer", "amount", "currency")} == {
        "customer": "cus_dev",
        "amount": 500,
        "currency": "usd",
    }

    # June 2.
    clock.set("2026-06-02 00:00")
    periods_advance(at=at("2026-06-02 00:00"))
    assert credits() == sample("june-2")
