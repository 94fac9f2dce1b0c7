"""Prices per primitive on a plan, products, the invoice display name and the currency:
written by the catalog service (from the API, the admin, Python), refused by path when
wrong, and refused when they would bill units twice or in another currency than Stripe's
price."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing_app.catalog import services as catalog
from billing_app.exceptions import InvalidInput
from billing_app.models import Plan, PlanPrice

from .utils import assert_field_error, error_fields, plan_state, synced_price

pytestmark = pytest.mark.django_db

TIERS = [
    {"up_to": 1000, "unit_amount": "0.5"},
    {"up_to": 10000, "unit_amount": "0.4", "flat_amount": "100"},
    {"up_to": None, "unit_amount": "0.3"},
]
GRADUATED = {"primitive": "llm.tokens", "model": "graduated", "tiers": TIERS}


def prices_of(plan_key: str) -> list[tuple]:
    return list(
        PlanPrice.objects.filter(plan__key=plan_key).values_list(
            "primitive",
            "model",
            "unit_amount",
            "package_size",
            "tiers",
            "included_quantity",
            "payment_terms",
        )
    )


def everything() -> list[tuple]:
    """What a plan upsert may write, prices included."""
    return plan_state() + list(
        PlanPrice.objects.order_by("plan__key", "primitive").values_list(
            "plan__key", "primitive", "model", "unit_amount", "tiers", "included_quantity"
        )
    )


def test_prices_are_stored_normalised_and_replaced_as_a_set():
    plan, _ = catalog.plan_upsert(
        key="dev",
        name="Developer",
        prices=[
            GRADUATED,
            {
                "primitive": "seo",
                "model": "package",
                "unit_amount": "0.6",
                "package_size": 1000,
                "included_quantity": 2000,
                "payment_terms": "in_advance",
            },
        ],
    )
    assert prices_of("dev") == [
        (
            "llm.tokens",
            "graduated",
            None,
            None,
            [
                {"up_to": 1000, "unit_amount": "0.5", "flat_amount": None},
                {"up_to": 10000, "unit_amount": "0.4", "flat_amount": "100"},
                {"up_to": None, "unit_amount": "0.3", "flat_amount": None},
            ],
            0,
            "in_arrears",
        ),
        ("seo", "package", Decimal("0.6"), 1000, [], 2000, "in_advance"),
    ]

    catalog.plan_upsert(key="dev", name="Developer")  # prices not given: kept
    assert len(prices_of("dev")) == 2
    catalog.plan_upsert(
        key="dev", name="Developer", prices=[{"primitive": "seo", "unit_amount": 2}]
    )
    assert prices_of("dev") == [("seo", "per_unit", Decimal(2), None, [], 0, "in_arrears")]
    catalog.plan_upsert(key="dev", name="Developer", prices=[])
    assert prices_of("dev") == []
    assert plan.pk == Plan.objects.get(key="dev").pk


@pytest.mark.parametrize(
    ("prices", "field"),
    [
        ("llm.tokens", "prices"),
        ([["llm.tokens"]], "prices.0"),
        ([{"primitive": "LLM tokens", "unit_amount": 1}], "prices.0.primitive"),
        (
            [{"primitive": "seo", "unit_amount": 1}, {"primitive": "seo", "unit_amount": 2}],
            "prices.1.primitive",
        ),
        ([{"primitive": "seo", "model": "tiered", "unit_amount": 1}], "prices.0.model"),
        ([{"primitive": "seo"}], "prices.0.unit_amount"),
        ([{"primitive": "seo", "unit_amount": "-1"}], "prices.0.unit_amount"),
        ([{"primitive": "seo", "unit_amount": "abc"}], "prices.0.unit_amount"),
        ([{"primitive": "seo", "unit_amount": "Infinity"}], "prices.0.unit_amount"),
        ([{"primitive": "seo", "unit_amount": "1e12"}], "prices.0.unit_amount"),
        ([{"primitive": "seo", "unit_amount": "0.0000000000001"}], "prices.0.unit_amount"),
        ([{"primitive": "seo", "unit_amount": True}], "prices.0.unit_amount"),
        ([{"primitive": "seo", "unit_amount": 1, "tiers": TIERS}], "prices.0.tiers"),
        ([{"primitive": "seo", "unit_amount": 1, "package_size": 10}], "prices.0.package_size"),
        ([{"primitive": "seo", "model": "package", "unit_amount": 1}], "prices.0.package_size"),
        (
            [{"primitive": "seo", "model": "package", "unit_amount": 1, "package_size": 0}],
            "prices.0.package_size",
        ),
        (
            [{"primitive": "seo", "unit_amount": 1, "included_quantity": -1}],
            "prices.0.included_quantity",
        ),
        (
            [{"primitive": "seo", "unit_amount": 1, "payment_terms": "weekly"}],
            "prices.0.payment_terms",
        ),
        # In advance charges the included quantity: there must be one.
        (
            [{"primitive": "seo", "unit_amount": 1, "payment_terms": "in_advance"}],
            "prices.0.included_quantity",
        ),
        ([{"primitive": "seo", "model": "volume"}], "prices.0.tiers"),
        ([{"primitive": "seo", "model": "volume", "tiers": "1000"}], "prices.0.tiers"),
        ([{**GRADUATED, "unit_amount": 1}], "prices.0.unit_amount"),
        ([{**GRADUATED, "tiers": [TIERS[0]]}], "prices.0.tiers.0.up_to"),  # last is bounded
        ([{**GRADUATED, "tiers": [TIERS[2], TIERS[0]]}], "prices.0.tiers.0.up_to"),
        ([{**GRADUATED, "tiers": [TIERS[1], TIERS[0], TIERS[2]]}], "prices.0.tiers.1.up_to"),
        ([{**GRADUATED, "tiers": [TIERS[0], TIERS[0], TIERS[2]]}], "prices.0.tiers.1.up_to"),
        (
            [{**GRADUATED, "tiers": [{"up_to": 0, "unit_amount": 1}, TIERS[2]]}],
            "prices.0.tiers.0.up_to",
        ),
        (
            [{**GRADUATED, "tiers": [{"up_to": 1.5, "unit_amount": 1}, TIERS[2]]}],
            "prices.0.tiers.0.up_to",
        ),
        ([{**GRADUATED, "tiers": [TIERS[0], {"up_to": None}]}], "prices.0.tiers.1.unit_amount"),
        (
            [{**GRADUATED, "tiers": [TIERS[0], {"unit_amount": 1, "flat_amount": "-5"}]}],
            "prices.0.tiers.1.flat_amount",
        ),
        ([{**GRADUATED, "tiers": [TIERS[0], 3]}], "prices.0.tiers.1"),
    ],
)
def test_bad_prices_are_refused_by_path_and_change_nothing(prices, field):
    catalog.plan_upsert(key="dev", name="Developer", prices=[GRADUATED])
    before = everything()
    with pytest.raises(InvalidInput) as refused:
        catalog.plan_upsert(key="dev", name="Renamed", prices=prices)
    assert error_fields(refused) == {field}
    assert everything() == before


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"minimum_commitment": "-1"}, "minimum_commitment"),
        ({"minimum_commitment": "x"}, "minimum_commitment"),
        ({"product_id": "nowhere"}, "product_id"),
        ({"invoice_display_name": "x" * 201}, "invoice_display_name"),
        ({"trial_days": -1}, "trial_days"),
        ({"trial_days": 731}, "trial_days"),
        ({"trial_end_action": "extend"}, "trial_end_action"),
        ({"trial_fallback_plan": "nowhere"}, "trial_fallback_plan"),
        ({"trial_fallback_plan": "dev"}, "trial_fallback_plan"),
        # Falling back needs somewhere to fall back to.
        ({"trial_end_action": "fallback"}, "trial_end_action"),
    ],
)
def test_bad_plan_fields_are_refused_and_change_nothing(changes, field):
    catalog.plan_upsert(key="dev", name="Developer")
    before = everything()
    with pytest.raises(InvalidInput) as refused:
        catalog.plan_upsert(key="dev", name="Renamed", **changes)
    assert error_fields(refused) == {field}
    assert everything() == before


def test_a_price_and_an_overage_price_for_the_same_primitive_are_refused():
    catalog.plan_upsert(key="dev", name="Dev", quotas={"seo": 10}, overage={"seo": "0.5"})
    before = everything()
    with pytest.raises(InvalidInput) as refused:
        catalog.plan_upsert(
            key="dev",
            name="Dev",
            prices=[{"primitive": "aeo", "unit_amount": 1}, {"primitive": "seo", "unit_amount": 1}],
        )
    assert error_fields(refused) == {"prices.1.primitive"}
    assert everything() == before

    # The other way round: an overage price for a primitive that has a price.
    catalog.plan_upsert(
        key="dev", name="Dev", overage={}, prices=[{"primitive": "seo", "unit_amount": 1}]
    )
    before = everything()
    with pytest.raises(InvalidInput) as refused:
        catalog.plan_upsert(key="dev", name="Dev", overage={"seo": "0.5"})
    assert error_fields(refused) == {"overage"}
    assert everything() == before

    # Both at once, in one call: refused too.
    with pytest.raises(InvalidInput):
        catalog.plan_upsert(
            key="dev",
            name="Dev",
            overage={"seo": "0.5"},
            prices=[{"primitive": "seo", "unit_amount": 1}],
        )
    # A quota that blocks and a price for its primitive are fine: the quota caps, the
    # price bills what it let through.
    plan, _ = catalog.plan_upsert(
        key="dev", name="Dev", overage={}, prices=[{"primitive": "seo", "unit_amount": 1}]
    )
    assert plan.quotas.get().overage == "block"


def test_products_group_plans_and_the_display_name_defaults_to_the_name():
    product, created = catalog.product_upsert(key="llm", name="LLM platform")
    assert created
    assert catalog.product_upsert(key="llm", name="LLM API")[0].pk == product.pk
    developer, _ = catalog.plan_upsert(key="developer", name="Developer", product_id="llm")
    scale, _ = catalog.plan_upsert(
        key="scale", name="Scale", product_id=product.pk, invoice_display_name="Scale (monthly)"
    )
    assert list(product.plans.order_by("key")) == [developer, scale]
    assert (developer.display_name, scale.display_name) == ("Developer", "Scale (monthly)")
    catalog.plan_upsert(key="scale", name="Scale", product_id=None, invoice_display_name="")
    scale.refresh_from_db()
    assert (scale.product, scale.display_name) == (None, "Scale")


def test_trial_settings():
    catalog.plan_upsert(key="free", name="Free")
    plan, _ = catalog.plan_upsert(
        key="pro",
        name="Pro",
        trial_days=14,
        trial_end_action="fallback",
        trial_fallback_plan="free",
    )
    assert (plan.trial_days, plan.trial_end_action, plan.trial_fallback_plan.key) == (
        14,
        "fallback",
        "free",
    )


# --- currency: the Stripe price's -----------------------------------------------------


def test_the_currency_must_be_the_synced_stripe_prices(stripe_stub):
    synced_price(stripe_stub, "price_eur", "eur")
    before = everything()
    with pytest.raises(InvalidInput) as refused:
        catalog.plan_upsert(key="eu", name="EU", stripe_price_id="price_eur")  # usd by default
    assert error_fields(refused) == {"currency"}
    assert "eur" in refused.value.fields["currency"][0]
    assert everything() == before

    plan, _ = catalog.plan_upsert(key="eu", name="EU", stripe_price_id="price_eur", currency="EUR")
    assert plan.currency == "eur"
    with pytest.raises(InvalidInput):
        catalog.plan_upsert(key="eu", name="EU", currency="usd")
    # A price dj-stripe has not synced is not checked: no network call to find out.
    plan, _ = catalog.plan_upsert(key="us", name="US", stripe_price_id="price_unsynced")
    assert plan.currency == "usd"


# --- the API --------------------------------------------------------------------------


def test_the_api_writes_and_answers_prices_in_camel_case(api):
    api.post("/v1/products", {"key": "llm", "name": "LLM platform"}, format="json")
    body = {
        "key": "developer",
        "name": "Developer",
        "productId": "llm",
        "invoiceDisplayName": "Developer (monthly)",
        "billingCadence": "P1M",
        "minimumCommitment": "2000",
        "trialDays": 14,
        "trialEndAction": "stop",
        "prices": [
            {"primitive": "llm.input-tokens", "unitAmount": "0.0002"},
            {
                "primitive": "llm.output-tokens",
                "model": "package",
                "unitAmount": "0.6",
                "packageSize": 1000,
            },
            {
                "primitive": "fine-tuning",
                "model": "volume",
                "tiers": [
                    {"upTo": 10, "unitAmount": "500"},
                    {"upTo": None, "unitAmount": "400", "flatAmount": "1000"},
                ],
                "includedQuantity": 2,
                "paymentTerms": "in_advance",
            },
        ],
    }
    created = api.post("/v1/plans", body, format="json")
    assert created.status_code == 201, created.json()
    answer = created.json()
    assert answer["productId"] == "llm"
    assert answer["invoiceDisplayName"] == "Developer (monthly)"
    assert answer["billingInterval"] == "monthly"  # deprecated, still answered
    assert answer["minimumCommitment"] == "2000"
    assert (answer["trialDays"], answer["trialEndAction"], answer["trialFallbackPlan"]) == (
        14,
        "stop",
        None,
    )
    assert answer["prices"] == [
        {
            "primitive": "fine-tuning",
            "model": "volume",
            "unitAmount": None,
            "packageSize": None,
            "tiers": [
                {"upTo": 10, "unitAmount": "500", "flatAmount": None},
                {"upTo": None, "unitAmount": "400", "flatAmount": "1000"},
            ],
            "includedQuantity": 2,
            "paymentTerms": "in_advance",
        },
        {
            "primitive": "llm.input-tokens",
            "model": "per_unit",
            "unitAmount": "0.0002",
            "packageSize": None,
            "tiers": [],
            "includedQuantity": 0,
            "paymentTerms": "in_arrears",
        },
        {
            "primitive": "llm.output-tokens",
            "model": "package",
            "unitAmount": "0.6",
            "packageSize": 1000,
            "tiers": [],
            "includedQuantity": 0,
            "paymentTerms": "in_arrears",
        },
    ]
    (listed,) = api.get("/v1/plans").json()
    assert listed == answer
    assert api.get("/v1/products").json()[0]["key"] == "llm"


@pytest.mark.parametrize(
    ("prices", "field"),
    [
        # Parsed by the serializer: named by path.
        ([{"primitive": "seo", "unitAmount": "0.0000000000001"}], "prices.0.unitAmount"),
        ([{"primitive": "seo", "unitAmount": "-1"}], "prices.0.unitAmount"),
        ([{"primitive": "Seo!", "unitAmount": "1"}], "prices.0.primitive"),
        ([{"primitive": "seo", "model": "tiered"}], "prices.0.model"),
        (
            [{"primitive": "seo", "model": "volume", "tiers": [{"upTo": 0, "unitAmount": "1"}]}],
            "prices.0.tiers.0.upTo",
        ),
        ({"primitive": "seo"}, "prices"),
        # Checked by the service: named by path too, in camelCase.
        (
            [
                {
                    "primitive": "seo",
                    "model": "graduated",
                    "tiers": [
                        {"upTo": 100, "unitAmount": "1"},
                        {"upTo": 50, "unitAmount": "1"},
                        {"upTo": None, "unitAmount": "1"},
                    ],
                }
            ],
            "prices.0.tiers.1.upTo",
        ),
        (
            [{"primitive": "seo", "unitAmount": "1"}, {"primitive": "seo", "unitAmount": "2"}],
            "prices.1.primitive",
        ),
        ([{"primitive": "seo", "model": "package", "unitAmount": "1"}], "prices.0.packageSize"),
        (
            [{"primitive": "seo", "unitAmount": "1", "paymentTerms": "in_advance"}],
            "prices.0.includedQuantity",
        ),
    ],
)
def test_the_api_refuses_bad_prices_naming_the_path(api, prices, field):
    api.post("/v1/plans", {"key": "dev", "name": "Dev"}, format="json")
    before = everything()
    response = api.post("/v1/plans", {"key": "dev", "name": "Dev", "prices": prices}, format="json")
    assert_field_error(response, field)
    assert everything() == before


def test_the_api_refuses_a_price_over_an_overage_price(api):
    body = {"key": "dev", "name": "Dev", "quotas": {"seo": 10}, "overage": {"seo": "0.5"}}
    assert api.post("/v1/plans", body, format="json").status_code == 201
    before = everything()
    response = api.post(
        "/v1/plans", {**body, "prices": [{"primitive": "seo", "unitAmount": "1"}]}, format="json"
    )
    assert_field_error(response, "prices.0.primitive")
    assert "both would bill the same units" in response.json()["prices.0.primitive"][0]
    assert everything() == before


def test_the_api_refuses_another_currency_than_the_stripe_prices(api, stripe_stub):
    synced_price(stripe_stub, "price_eur", "eur")
    body = {"key": "eu", "name": "EU", "stripePriceId": "price_eur"}
    assert_field_error(api.post("/v1/plans", body, format="json"), "currency")
    assert not Plan.objects.exists()
    created = api.post("/v1/plans", {**body, "currency": "eur"}, format="json")
    assert created.status_code == 201
    assert created.json()["currency"] == "eur"


def test_the_api_refuses_an_unknown_product(api):
    response = api.post("/v1/plans", {"key": "dev", "name": "Dev", "productId": "x"}, format="json")
    assert_field_error(response, "productId")
    assert not Plan.objects.exists()
