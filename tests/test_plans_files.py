"""Plans as code: ``manage.py billing_plans apply FILE`` makes the catalog what a file says
(the seed contract's ``config.json`` as it is, or every plan field), through the catalog's
services in one transaction; ``--check`` fails when the database differs; ``export`` writes
a file that applies as the identity."""

from __future__ import annotations

import io
import json
import sys
from decimal import Decimal

import pytest
import yaml
from django.core.management import CommandError, call_command
from hypothesis import given
from hypothesis import strategies as st

from billing_app.catalog import services as catalog
from billing_app.catalog.files import catalog_export
from billing_app.catalog.names import metric_name, metric_primitive
from billing_app.client import billing
from billing_app.entitlements import version_of
from billing_app.metering import services as metering
from billing_app.models import AccountKit, Plan, PlanQuota
from billing_app.subscriptions import services as subscriptions

from .utils import admin_form_data, kit_state, plan_state

pytestmark = pytest.mark.django_db

# The seed contract's config.json (seeds/002), as it is.
SEED = """{
"billing": {
"plans": {
"free": {
"apiCalls": 1000,
"llmTokens": 10000,
"storage": 104857600
},
"pro": {
"apiCalls": 100000,
"llmTokens": 1000000,
"storage": 10737418240
}
}
}
}"""


def with_storage_gauge(text: str = SEED) -> str:
    """The seed's file, saying that storage is a gauge (a level, not usage per month)."""
    data = json.loads(text)
    data["billing"]["gauges"] = ["storage"]
    return json.dumps(data)


def plans(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """Run the command as a shell would: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        call_command("billing_plans", *args, stdout=out, stderr=err)
        status = 0
    except CommandError as error:
        status = error.returncode
        err.write(str(error))
    finally:
        sys.stdin = saved
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def write(tmp_path):
    def write(text: str, name: str = "config.json") -> str:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write


def limits(key: str) -> dict[str, tuple[str, int]]:
    return {q.primitive: (q.kind, q.limit) for q in PlanQuota.objects.filter(plan__key=key)}


# The seed's file


def test_the_seed_file_applied_to_an_empty_database_gives_the_seed_plans(write):
    status, out, err = plans("apply", write(SEED))

    assert status == 0, err
    assert sorted(Plan.objects.values_list("key", flat=True)) == ["free", "pro"]
    # camelCase metrics are primitives: apiCalls -> api.calls, llmTokens -> llm.tokens.
    assert limits("free") == {
        "api.calls": ("counter", 1000),
        "llm.tokens": ("counter", 10000),
        "storage": ("counter", 104857600),
    }
    assert limits("pro") == {
        "api.calls": ("counter", 100000),
        "llm.tokens": ("counter", 1000000),
        "storage": ("counter", 10737418240),
    }
    pro = Plan.objects.get(key="pro")
    assert (pro.name, pro.period, pro.billing_cadence, pro.currency, pro.active) == (
        "pro",
        "month",
        "P1M",
        "usd",
        True,
    )
    assert "+ plan free" in out and "+ plan pro" in out
    assert "2 change(s) applied" in err


def test_metrics_named_gauges_become_gauges(write):
    assert plans("apply", write(with_storage_gauge()))[0] == 0

    assert limits("pro") == {
        "api.calls": ("counter", 100000),
        "llm.tokens": ("counter", 1000000),
        "storage": ("gauge", 10737418240),
    }


def test_applying_twice_changes_nothing(write, customer):
    path = write(with_storage_gauge())
    plans("apply", path)
    subscriptions.subscription_set(customer=customer, plan_key="pro")
    before, version = plan_state(), version_of(customer.pk)

    status, out, err = plans("apply", path)

    assert (status, out) == (0, "")
    assert "nothing to change" in err
    assert plan_state() == before  # not even updated_at moved
    assert version_of(customer.pk) == version


def test_a_change_in_the_file_binds_subscribers_at_once(write, customer):
    plans("apply", write(SEED))
    subscriptions.subscription_set(customer=customer, plan_key="pro")
    metering.usage_record(customer_id=customer.pk, primitive="api.calls", quantity=10)
    version = version_of(customer.pk)

    status, out, _ = plans("apply", write(SEED.replace('"apiCalls": 100000', '"apiCalls": 10')))

    assert status == 0
    assert out.splitlines() == ["~ plan pro", '    quotas["api.calls"]: 100000 -> 10']
    assert version_of(customer.pk) > version
    from billing_app.exceptions import QuotaExceeded

    with pytest.raises(QuotaExceeded):
        metering.usage_record(customer_id=customer.pk, primitive="api.calls")


# --check and --dry-run


def test_check_passes_on_the_same_catalog_and_fails_after_a_change_elsewhere(write):
    path = write(SEED)
    plans("apply", path)
    assert plans("apply", path, "--check")[0] == 0

    # An operator changes a quota in the admin (the admin saves through this service).
    catalog.plan_upsert(key="pro", name="pro", quotas={"api.calls": 5, "llm.tokens": 1000000})
    before = plan_state()

    status, out, err = plans("apply", path, "--check")

    assert status == 1
    assert "~ plan pro" in out
    assert '    quotas["api.calls"]: 5 -> 100000' in out
    assert "    quotas.storage: null -> 10737418240" in out
    assert "differs" in err
    assert plan_state() == before  # a check writes nothing


def test_check_fails_after_a_quota_is_changed_in_the_admin(write, admin_client):
    path = write(SEED)
    plans("apply", path)
    plan = Plan.objects.get(key="pro")
    page = admin_client.get(f"/admin/billing_app/plan/{plan.pk}/change/")
    (quotas,) = [
        i.formset for i in page.context["inline_admin_formsets"] if i.formset.prefix == "quotas"
    ]
    (row,) = [f.prefix for f in quotas.forms if f.instance.primitive == "llm.tokens"]
    form = admin_form_data(page, **{f"{row}-limit": 7})

    saved = admin_client.post(f"/admin/billing_app/plan/{plan.pk}/change/", form)

    assert saved.status_code == 302, saved.content.decode()[:2000]
    status, out, _ = plans("apply", path, "--check")
    assert status == 1
    assert out.splitlines() == ["~ plan pro", '    quotas["llm.tokens"]: 7 -> 1000000']


def test_a_dry_run_shows_the_changes_and_applies_none(write):
    status, out, err = plans("apply", write(SEED), "--dry-run")

    assert status == 0
    assert "+ plan pro" in out
    assert "none applied" in err
    assert not Plan.objects.exists()


# Export: the same shape, so that applying an export changes nothing


@pytest.fixture
def rich_catalog(db):
    catalog.account_kit_upsert(
        key="kit-pro", name="Pro kit", primitives={"api.calls": 600, "llm.tokens": None}
    )
    catalog.account_kit_upsert(key="kit-unused", name="Unused", primitives={})
    catalog.product_upsert(key="api", name="The API")
    catalog.plan_upsert(key="legacy", name="Legacy", quotas={"seo": 5}, active=False)
    catalog.plan_upsert(
        key="pro",
        name="Pro (monthly)",
        product_id="api",
        invoice_display_name="Pro plan",
        account_kit_id="kit-pro",
        stripe_price_id="price_pro",
        stripe_meter_event="pro_overage",
        quotas={"api.calls": 100000, "llm.tokens": 1000000},
        gauges={"storage": 10737418240},
        per_seat=["api.calls", "storage"],
        overage={"llm.tokens": "0.0002", "storage": "0.0000000023"},
        features=["sso", "csv-export"],
        period="month",
        billing_cadence="P3M",
        currency="eur",
        prices=[
            {
                "primitive": "api.calls",
                "model": "graduated",
                "tiers": [
                    {"up_to": 1000, "unit_amount": "0", "flat_amount": None},
                    {"up_to": None, "unit_amount": "0.2", "flat_amount": "500"},
                ],
            },
            {"primitive": "seo", "model": "package", "unit_amount": "100", "package_size": 50},
        ],
        minimum_commitment="2500",
        credit_costs={"seo": 2},
        credits={"per_period": 1000, "rollover_cap": 500, "rollover_days": 90},
        trial_days=14,
        trial_end_action="fallback",
        trial_fallback_plan="legacy",
    )


@pytest.mark.parametrize("syntax", ["json", "yaml"])
def test_export_then_apply_check_is_the_identity(rich_catalog, syntax):
    status, exported, _ = plans("export", "--format", syntax)
    assert status == 0

    status, out, err = plans("apply", "-", "--check", "--format", syntax, stdin=exported)

    assert (status, out) == (0, ""), err
    assert "nothing to change" in err


def test_an_export_applied_puts_the_catalog_back(rich_catalog, write):
    path = write(plans("export")[1])
    before = catalog_export()
    catalog.plan_upsert(key="pro", name="Renamed", quotas={"seo": 1}, gauges={}, active=False)
    catalog.account_kit_upsert(key="kit-pro", name="Pro kit", primitives={})
    catalog.plan_upsert(key="extra", name="Extra")

    status, out, err = plans("apply", path)

    assert status == 0, err
    after = catalog_export()
    # Extra was not in the file: retired, not deleted (nobody is on it).
    assert after["billing"]["plans"].pop("extra")["active"] is False
    assert after == before
    assert "- plan extra: not in the file, retired (active: false)" in out


def test_export_writes_every_plan_field_in_the_files_shape(rich_catalog):
    exported = json.loads(plans("export")[1])

    assert exported["billing"]["kits"]["kit-pro"] == {
        "name": "Pro kit",
        "primitives": {"api.calls": {"ratePerMinute": 600}, "llm.tokens": {"ratePerMinute": None}},
    }
    assert exported["billing"]["products"] == {"api": {"name": "The API"}}
    assert exported["billing"]["plans"]["pro"] == {
        "name": "Pro (monthly)",
        "productId": "api",
        "invoiceDisplayName": "Pro plan",
        "accountKitId": "kit-pro",
        "stripePriceId": "price_pro",
        "stripeMeterEvent": "pro_overage",
        "period": "month",
        "billingCadence": "P3M",
        "currency": "eur",
        "active": True,
        "quotas": {"api.calls": 100000, "llm.tokens": 1000000},
        "gauges": {"storage": 10737418240},
        "perSeat": ["api.calls", "storage"],
        "overage": {"llm.tokens": "0.0002", "storage": "0.0000000023"},
        "prices": [
            {
                "primitive": "api.calls",
                "model": "graduated",
                "unitAmount": None,
                "packageSize": None,
                "tiers": [
                    {"upTo": 1000, "unitAmount": "0", "flatAmount": None},
                    {"upTo": None, "unitAmount": "0.2", "flatAmount": "500"},
                ],
                "includedQuantity": 0,
                "paymentTerms": "in_arrears",
            },
            {
                "primitive": "seo",
                "model": "package",
                "unitAmount": "100",
                "packageSize": 50,
                "tiers": [],
                "includedQuantity": 0,
                "paymentTerms": "in_arrears",
            },
        ],
        "minimumCommitment": "2500",
        "creditCosts": {"seo": 2},
        "credits": {"perPeriod": 1000, "rolloverCap": 500, "rolloverDays": 90},
        "trialDays": 14,
        "trialEndAction": "fallback",
        "trialFallbackPlan": "legacy",
        "features": ["csv-export", "sso"],
    }
    assert yaml.safe_load(plans("export", "--format", "yaml")[1]) == exported


def test_a_yaml_file_with_a_kit_defined_in_its_plan(write):
    text = """
billing:
  gauges: [storage]
  plans:
    team:
      name: Team
      kit:
        name: Team kit
        primitives:
          api.calls: {ratePerMinute: 120}
          storage: null
      apiCalls: 5000
      storage: 1000000
      features: [sso]
"""
    status, _, err = plans("apply", write(text, "plans.yaml"))

    assert status == 0, err
    team = Plan.objects.select_related("account_kit").get(key="team")
    assert team.account_kit.key == "team"  # the plan's key when the kit names none
    assert dict(team.account_kit.primitives.values_list("primitive", "rate_per_minute")) == {
        "api.calls": 120,
        "storage": None,
    }
    assert limits("team") == {"api.calls": ("counter", 5000), "storage": ("gauge", 1000000)}
    assert plans("apply", write(text, "plans.yaml"), "--check")[0] == 0


# Retiring plans


def test_a_plan_customers_are_on_is_not_retired_unless_pruning(write, customer):
    plans("apply", write(SEED))
    subscriptions.subscription_set(customer=customer, plan_key="free")
    catalog.plan_upsert(key="unused", name="Unused")
    only_pro = json.dumps(
        {"billing": {"plans": {"pro": json.loads(SEED)["billing"]["plans"]["pro"]}}}
    )
    before = plan_state()

    status, _, err = plans("apply", write(only_pro))

    assert status == 2
    assert "billing.plans.free: 1 live subscription(s) are on plan 'free'" in err
    assert "nothing applied" in err
    assert plan_state() == before  # not even the unused plan was retired
    assert "pass --prune to retire it" in err

    # A dry run shows what the file would change beside why it cannot.
    status, out, err = plans("apply", write(only_pro), "--dry-run")
    assert status == 2
    assert (
        "- plan free: not in the file, retired (active: false) [1 live subscription(s) on "
        "it: needs --prune]" in out
    )
    assert "- plan unused: not in the file, retired (active: false)" in out

    status, out, err = plans("apply", write(only_pro), "--prune")

    assert status == 0, err
    assert "[1 live subscription(s) on it: their customers keep it]" in out
    assert dict(Plan.objects.values_list("key", "active")) == {
        "free": False,
        "pro": True,
        "unused": False,
    }
    # Its customers keep it; it is only no longer offered.
    assert billing.for_customer(customer).entitlement().plan == "free"


def test_a_file_that_retires_a_plan_customers_are_on_needs_prune(write, customer):
    plans("apply", write(SEED))
    subscriptions.subscription_set(customer=customer, plan_key="pro")
    data = json.loads(SEED)
    data["billing"]["plans"]["pro"]["active"] = False

    assert plans("apply", write(json.dumps(data)))[0] == 2
    assert Plan.objects.get(key="pro").active is True
    assert plans("apply", write(json.dumps(data)), "--prune")[0] == 0
    assert Plan.objects.get(key="pro").active is False


# Bad files: one error per problem, with its path; nothing applied


def test_every_problem_of_a_file_is_named_by_its_path_and_nothing_is_applied(write):
    catalog.plan_upsert(key="keep", name="Keep", quotas={"seo": 1})
    before, kits = plan_state(), kit_state()
    bad = {
        "billing": {
            "gauges": ["storage"],
            "plans": {
                "pro": {
                    "apiCalls": -5,
                    "llmTokens": "many",
                    "API_Calls": 3,
                    "period": "fortnight",
                    "billingCadence": "monthly",
                    "currency": "dollars",
                    "active": "yes",
                    "perSeat": ["aeo"],
                    "overage": {"seo": "-1"},
                    "features": ["SSO ok"],
                    "accountKitId": "nowhere",
                    "quotas": {"storage": 5, "seo": 3},
                },
                "Bad Key": {},
                "free": 7,
            },
        },
        "other": "left alone",
    }

    status, out, err = plans("apply", write(json.dumps(bad)))

    assert status == 2
    lines = err.splitlines()
    most = "must be a non-negative integer (at most 9223372036854775807)"
    cadence = [line for line in lines if line.startswith("billing.plans.pro.billingCadence:")]
    assert len(cadence) == 1 and "'monthly' is not a billing cadence" in cadence[0]
    assert set(lines[:-1]) - set(cadence) == {
        f"billing.plans.pro.apiCalls: {most}",
        f"billing.plans.pro.llmTokens: {most}",
        "billing.plans.pro.API_Calls: is neither a plan field nor a metric (a camelCase name "
        "such as apiCalls, or a primitive such as api.calls)",
        "billing.plans.pro.quotas.storage: storage is a gauge (billing.gauges): limit it in gauges",
        "billing.plans.pro.period: must be one of day, week, month, year",
        "billing.plans.pro.currency: must be a three-letter ISO 4217 code (usd)",
        "billing.plans.pro.active: must be true or false",
        "billing.plans.pro.perSeat[0]: aeo has no quota or gauge in this plan",
        "billing.plans.pro.overage.seo: must be a unit price: a decimal >= 0 with at "
        "most 12 decimal places",
        "billing.plans.pro.features[0]: must be a feature slug such as 'sso'",
        "billing.plans.pro.accountKitId: no Account Kit 'nowhere' in the file or the database",
        "billing.plans[\"Bad Key\"]: is not a key: a slug of letters, digits, '-' or '_', at "
        "most 64",
        "billing.plans.free: must be an object with string keys",
    }
    assert len(lines) == 15  # one line per problem, and the summary
    assert "nothing applied" in lines[-1]
    assert out == ""
    assert (plan_state(), kit_state()) == (before, kits)


@pytest.mark.parametrize(
    ("text", "syntax", "message"),
    [
        ('{"billing": {"plans": {"pro": {"apiCalls": 1,}}}}', "json", "line 1, column "),
        ('{"billing": {"plans": {}, "plans": {}}}', "json", '"plans" appears twice'),
        ("billing: {plans: [}", "yaml", "line 1, column "),
        ("[1, 2]", "json", "must be an object"),
        ('{"other": {}}', "json", "billing: is missing"),
        ('{"billing": {"kits": {}}}', "json", "billing.plans: is missing"),
    ],
)
def test_a_file_that_does_not_parse_says_where(write, text, syntax, message):
    status, _, err = plans("apply", write(text), "--format", syntax)
    assert status == 2
    assert message in err
    assert not Plan.objects.exists()


def test_a_refusal_by_a_service_rolls_back_the_whole_file(write):
    """Kits and plans before it were changed already when the service refused: one
    transaction undoes them all."""
    catalog.plan_upsert(key="other", name="Other", stripe_price_id="price_taken")
    before = plan_state()
    data = {
        "billing": {
            "kits": {"k": {"name": "K", "primitives": {"api.calls": {}}}},
            "plans": {
                "a-first": {"apiCalls": 1},
                # The database's plan "other" (not in the file: retired) keeps this price.
                "z-last": {"apiCalls": 2, "stripePriceId": "price_taken"},
            },
        }
    }

    status, _, err = plans("apply", write(json.dumps(data)))

    assert status == 2
    assert (
        "billing.plans[\"z-last\"].stripePriceId: Plan 'other' already uses this price."
        in err.splitlines()
    )
    assert plan_state() == before
    assert not AccountKit.objects.exists()


def test_a_metric_given_twice_in_a_plan_is_a_problem(write):
    data = {"billing": {"plans": {"a": {"apiCalls": 1, "api.calls": 2}}}}
    status, _, err = plans("apply", write(json.dumps(data)))
    assert status == 2
    assert 'billing.plans.a["api.calls"]: api.calls is given twice (also at ' in err


def test_a_metric_is_one_kind_in_every_plan(write):
    data = {"billing": {"plans": {"a": {"gauges": {"storage": 1}}, "b": {"storage": 2}}}}
    status, _, err = plans("apply", write(json.dumps(data)))
    assert status == 2
    assert "billing.plans.b.quotas.storage: is in gauges of plan 'a'" in err


# Metric names


@pytest.mark.parametrize(
    ("name", "primitive"),
    [
        ("apiCalls", "api.calls"),
        ("llmTokens", "llm.tokens"),
        ("storage", "storage"),
        ("emailSendV2", "email.send.v2"),
        ("s3Bytes", "s3.bytes"),
    ],
)
def test_metric_names_are_primitives_and_back(name, primitive):
    assert metric_primitive(name) == primitive
    assert metric_name(primitive) == name


@pytest.mark.parametrize("name", ["APICalls", "api_Calls", "2fa", "api calls", "apiCalls!", ""])
def test_what_is_not_a_metric_name(name):
    assert metric_primitive(name) is None


@given(st.lists(st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), min_size=1, max_size=4))
def test_every_camel_case_metric_name_round_trips(words):
    name = words[0] + "".join(word.capitalize() for word in words[1:])
    assert metric_name(metric_primitive(name)) == name


# Done when: /billing/usage of a customer on the seed's pro plan, in the contract's shape


def test_billing_usage_of_a_customer_on_the_seeds_pro_plan(write, customer, customer_client):
    plans("apply", write(with_storage_gauge()))
    subscriptions.subscription_set(customer=customer, plan_key="pro")
    metering.usage_record(customer_id=customer.pk, primitive="api.calls", quantity=15420)
    metering.usage_record(customer_id=customer.pk, primitive="llm.tokens", quantity=250000)
    billing.for_customer(customer).gauge("storage").set(1073741824)

    response = customer_client.get("/billing/usage")

    assert response.status_code == 200
    body = response.json()
    assert body["usage"] == {
        "apiCalls": 15420,
        "apiCallsLimit": 100000,
        "llmTokens": 250000,
        "llmTokensLimit": 1000000,
        "storage": 1073741824,
        "storageLimit": 10737418240,
    }
    assert set(body) == {"period", "periodStart", "periodEnd", "usage"}


# Prices, products, credits and trials in the file


def test_a_file_with_prices_a_product_credits_and_a_trial(write):
    data = {
        "billing": {
            "products": {"api": {"name": "The API"}},
            "plans": {
                # Falls back to a plan that comes after it: the fallback is applied first.
                "developer": {
                    "productId": "api",
                    "llmTokens": 1000000,
                    "prices": [
                        {
                            "primitive": "llm.tokens",
                            "model": "package",
                            "unitAmount": "0.2",
                            "packageSize": 1000,
                        }
                    ],
                    "creditCosts": {"llm.tokens": 1},
                    "credits": {"perPeriod": 50000, "rolloverCap": 10000},
                    "trialDays": 14,
                    "trialEndAction": "fallback",
                    "trialFallbackPlan": "zero",
                },
                "zero": {"llmTokens": 1000},
            },
        }
    }
    path = write(json.dumps(data))

    status, out, err = plans("apply", path)

    assert status == 0, err
    developer = Plan.objects.select_related("product", "trial_fallback_plan").get(key="developer")
    assert (developer.product.key, developer.trial_fallback_plan.key) == ("api", "zero")
    price = developer.prices.get()
    assert (price.model, price.unit_amount, price.package_size) == ("package", Decimal("0.2"), 1000)
    assert developer.credits.per_period == 50000
    assert "+ product api" in out
    assert plans("apply", path, "--check")[0] == 0


def test_the_problems_of_prices_credits_and_trials_are_named_by_their_paths(write):
    bad = {
        "billing": {
            "plans": {
                "pro": {
                    "productId": "nowhere",
                    "prices": [
                        {"primitive": "Bad", "unitAmount": "-1", "color": "red"},
                        {"primitive": "seo", "tiers": [{"upTo": 5, "unitAmount": "x"}]},
                        "cheap",
                    ],
                    "minimumCommitment": "lots",
                    "creditCosts": {"seo": -2},
                    "credits": {"perPeriod": 1.5, "forever": True},
                    "trialDays": 9999,
                    "trialEndAction": "explode",
                    "trialFallbackPlan": "pro",
                },
            },
        }
    }

    status, _, err = plans("apply", write(json.dumps(bad)))

    assert status == 2
    price = "must be a unit price: a decimal >= 0 with at most 12 decimal places"
    assert set(err.splitlines()[:-1]) == {
        "billing.plans.pro.productId: no product 'nowhere' in the file or the database",
        "billing.plans.pro.prices[0].color: is not a field of a price (model, unitAmount, "
        "packageSize, tiers, includedQuantity, paymentTerms)",
        "billing.plans.pro.prices[0].primitive: must be a primitive: lowercase letters, "
        "digits, '.', '_', '-'",
        f"billing.plans.pro.prices[0].unitAmount: {price}",
        f"billing.plans.pro.prices[1].tiers[0].unitAmount: {price}",
        "billing.plans.pro.prices[2]: must be an object with string keys",
        f"billing.plans.pro.minimumCommitment: {price}",
        "billing.plans.pro.creditCosts.seo: must be a non-negative integer (at most "
        "9223372036854775807)",
        "billing.plans.pro.credits.forever: is not perPeriod, rolloverCap or rolloverDays",
        "billing.plans.pro.credits.perPeriod: must be a non-negative integer (at most "
        "9223372036854775807)",
        "billing.plans.pro.trialDays: must be a non-negative integer (at most 730)",
        "billing.plans.pro.trialEndAction: must be one of convert, fallback, stop",
        "billing.plans.pro.trialFallbackPlan: must be the key of another plan",
    }
    assert not Plan.objects.exists()


def test_a_price_the_catalog_refuses_is_named_by_its_path_in_the_file(write):
    data = {
        "billing": {
            "plans": {
                "pro": {
                    "seo": 10,
                    "prices": [
                        {
                            "primitive": "seo",
                            "model": "graduated",
                            "tiers": [
                                {"upTo": 10, "unitAmount": "1"},
                                {"upTo": 5, "unitAmount": "1"},
                                {"upTo": None, "unitAmount": "1"},
                            ],
                        }
                    ],
                }
            }
        }
    }

    status, _, err = plans("apply", write(json.dumps(data)))

    assert status == 2
    assert (
        "billing.plans.pro.prices[0].tiers[1].upTo: Tiers ascend: upTo must be above 10, not 5."
        in err.splitlines()
    )
    assert not Plan.objects.exists()


@pytest.mark.parametrize(
    ("member", "field"),
    [("trialDay", "trialDays"), ("price", "prices"), ("minimumCommittment", "minimumCommitment")],
)
def test_a_misspelt_plan_field_is_a_problem_not_a_quota(write, member, field):
    data = {"billing": {"plans": {"pro": {"apiCalls": 5, member: 14}}}}

    status, _, err = plans("apply", write(json.dumps(data)))

    assert status == 2
    assert f"billing.plans.pro.{member}: is not a plan field: did you mean {field}?" in err
    assert not Plan.objects.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"billing": {"plans": {"pro": {"accountKitId": ["x"]}}}}',
            "billing.plans.pro.accountKitId: no Account Kit",
        ),
        (
            '{"billing": {"plans": {"pro": {"name": "P\\u0000"}}}}',
            "billing.plans.pro.name: must be text",
        ),
        (
            '{"billing": {"plans": {"pro": {"name": "\\ud800"}}}}',
            "billing.plans.pro.name: must be text",
        ),
        (
            '{"billing": {"plans": {"pro": {"productId": "a\\u0000"}}}}',
            "billing.plans.pro.productId: no product",
        ),
        (
            '{"billing": {"plans": {"pro": {"accountKitId": "k\\u0000"}}}}',
            "billing.plans.pro.accountKitId: no Account Kit",
        ),
        (
            '{"billing": {"plans": {"pro": {"trialFallbackPlan": "f\\u0000"}}}}',
            "trialFallbackPlan: must be the key",
        ),
        ("[" * 100000, "file: Nested too deeply."),
        ("null", "file: must be an object"),
    ],
)
def test_input_no_database_can_take_is_a_problem_named_by_its_path(write, text, message):
    status, _, err = plans("apply", write(text))

    assert status == 2
    assert message in err
    assert not Plan.objects.exists()
