"""The catalog's writer: Account Kits, plans, their quotas, features and cadences."""

from decimal import Decimal

import pytest

from billing_app.catalog import services as catalog
from billing_app.entitlements import version_of
from billing_app.exceptions import InvalidInput
from billing_app.models import AccountKit, Plan
from billing_app.periods import interval_name
from billing_app.subscriptions.services import subscription_set

from .factories import AccountKitFactory, CustomerFactory, PlanFactory
from .utils import error_fields, plan_state, quotas_of

pytestmark = pytest.mark.django_db

# Digits that str.isdigit() accepts and a primary key lookup must not: int() reads the
# fullwidth ones as ASCII digits, and refuses superscripts.
FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))
ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + d) for d in range(10)))


# Account kits


def test_account_kit_upsert_creates_then_updates_by_key():
    kit, created = catalog.account_kit_upsert(
        key="kit-pro", name="Pro kit", primitives={"seo": None, "aeo": 60}
    )
    assert created
    assert dict(kit.primitives.values_list("primitive", "rate_per_minute")) == {
        "seo": None,
        "aeo": 60,
    }

    again, created = catalog.account_kit_upsert(
        key="kit-pro", name="Pro kit v2", primitives={"aeo": 30, "email.send": None}
    )
    assert not created
    assert again.pk == kit.pk
    again.refresh_from_db()
    assert again.name == "Pro kit v2"
    # The given set replaces the old one: seo is gone.
    assert dict(again.primitives.values_list("primitive", "rate_per_minute")) == {
        "aeo": 30,
        "email.send": None,
    }


def test_account_kit_upsert_without_primitives_keeps_them():
    kit = AccountKitFactory(key="kit-pro", allow={"seo": 10})
    catalog.account_kit_upsert(key="kit-pro", name="Renamed")
    kit.refresh_from_db()
    assert kit.name == "Renamed"
    assert list(kit.primitives.values_list("primitive", "rate_per_minute")) == [("seo", 10)]


def test_account_kit_upsert_with_empty_primitives_clears_them():
    kit = AccountKitFactory(key="kit-pro", allow={"seo": 10})
    catalog.account_kit_upsert(key="kit-pro", name="Kit", primitives={})
    assert not kit.primitives.exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"primitives": {"seo": -1}}, "primitives"),
        ({"primitives": {"seo": True}}, "primitives"),
        ({"primitives": {"seo": "10"}}, "primitives"),
        ({"primitives": {"seo": 2**31}}, "primitives"),
        ({"primitives": {"Not A Slug": None}}, "primitives"),
        ({"primitives": {"a" * 65: None}}, "primitives"),
        ({"key": "not a slug"}, "key"),
        ({"key": "k" * 65}, "key"),
        ({"name": ""}, "name"),
        ({"name": "n" * 201}, "name"),
    ],
)
def test_account_kit_upsert_refuses_bad_input_and_changes_nothing(fields, field):
    AccountKitFactory(key="kit-pro", name="Pro", allow={"seo": 10})
    arguments = {"key": "kit-pro", "name": "Changed", "primitives": {"aeo": None}} | fields

    with pytest.raises(InvalidInput) as excinfo:
        catalog.account_kit_upsert(**arguments)

    assert field in error_fields(excinfo)
    assert list(AccountKit.objects.values_list("key", "name")) == [("kit-pro", "Pro")]
    kit = AccountKit.objects.get()
    assert list(kit.primitives.values_list("primitive", "rate_per_minute")) == [("seo", 10)]


@pytest.mark.parametrize("ref", ["key", "pk", "str-pk"])
def test_account_kit_get_by_key_or_id(ref):
    kit = AccountKitFactory(key="kit-pro")
    value = {"key": kit.key, "pk": kit.pk, "str-pk": str(kit.pk)}[ref]
    assert catalog.account_kit_get(ref=value) == kit


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param(lambda kit: "²", id="superscript"),
        pytest.param(lambda kit: str(kit.pk).translate(FULLWIDTH), id="fullwidth-of-its-id"),
        pytest.param(lambda kit: str(kit.pk).translate(ARABIC_INDIC), id="arabic-indic-of-its-id"),
        pytest.param(lambda kit: str(2**70), id="beyond-any-key"),
        pytest.param(lambda kit: "no-such-kit", id="unknown-key"),
    ],
)
def test_account_kit_get_refuses_what_is_neither_its_id_nor_its_key(ref):
    kit = AccountKitFactory(key="kit-pro")
    with pytest.raises(InvalidInput) as excinfo:
        catalog.account_kit_get(ref=ref(kit))
    assert error_fields(excinfo) == {"account_kit_id"}


# Plans


def test_plan_upsert_creates_with_every_field():
    kit = AccountKitFactory(key="kit-pro")
    plan, created = catalog.plan_upsert(
        key="pro",
        name="Pro",
        account_kit_id="kit-pro",
        stripe_price_id="price_123",
        quotas={"seo": 1000, "aeo": 250},
        per_seat=["seo"],
        features=["sso", "csv-export"],
        period="week",
        billing_cadence="P1Y",
        currency="EUR",
        active=False,
        overage={"aeo": "0.5"},
        stripe_meter_event="api_calls",
    )
    assert created
    plan.refresh_from_db()
    assert plan.account_kit == kit
    assert plan.stripe_price_id == "price_123"
    assert quotas_of(plan) == {"seo": 1000, "aeo": 250}
    assert list(plan.quotas.filter(per_seat=True).values_list("primitive", flat=True)) == ["seo"]
    assert sorted(plan.features.values_list("feature", flat=True)) == ["csv-export", "sso"]
    assert (plan.period, plan.billing_cadence, plan.currency, plan.active) == (
        "week",
        "P1Y",
        "eur",
        False,
    )
    assert plan.stripe_meter_event == "api_calls"
    overage = {q.primitive: (q.overage, q.overage_unit_price) for q in plan.quotas.all()}
    assert overage == {"seo": ("block", None), "aeo": ("bill", Decimal("0.5"))}


def test_plan_upsert_defaults_for_a_new_plan():
    plan, created = catalog.plan_upsert(key="free", name="Free")
    assert created
    plan.refresh_from_db()
    assert plan.account_kit is None
    assert (plan.stripe_price_id, plan.period, plan.billing_cadence, plan.currency) == (
        "",
        "month",
        "P1M",
        "usd",
    )
    assert plan.active
    assert quotas_of(plan) == {}
    assert not plan.features.exists()


def test_plan_upsert_updates_by_key_and_unset_arguments_keep_their_value():
    kit = AccountKitFactory()
    catalog.plan_upsert(
        key="pro",
        name="Pro",
        account_kit_id=kit.pk,
        stripe_price_id="price_123",
        quotas={"seo": 1000, "aeo": 5},
        per_seat=["seo"],
        features=["sso"],
        period="day",
        billing_cadence="P3M",
        currency="gbp",
        active=False,
        overage={"aeo": 2},
    )

    plan, created = catalog.plan_upsert(key="pro", name="Pro 2")

    assert not created
    assert Plan.objects.count() == 1
    plan.refresh_from_db()
    assert plan.name == "Pro 2"
    assert plan.account_kit == kit
    assert plan.stripe_price_id == "price_123"
    assert quotas_of(plan) == {"seo": 1000, "aeo": 5}
    assert list(plan.quotas.filter(per_seat=True).values_list("primitive", flat=True)) == ["seo"]
    assert list(plan.quotas.filter(overage="bill").values_list("primitive", flat=True)) == ["aeo"]
    assert list(plan.features.values_list("feature", flat=True)) == ["sso"]
    assert (plan.period, plan.billing_cadence, plan.currency, plan.active) == (
        "day",
        "P3M",
        "gbp",
        False,
    )


def test_plan_upsert_quotas_replace_the_whole_set():
    plan = PlanFactory(key="pro", limits={"seo": 10, "aeo": 5})
    catalog.plan_upsert(key="pro", name="Pro", quotas={"seo": 20, "email.send": 0})
    assert quotas_of(plan) == {"seo": 20, "email.send": 0}

    catalog.plan_upsert(key="pro", name="Pro", quotas={})
    assert quotas_of(plan) == {}


def test_plan_upsert_per_seat_features_and_overage_replace_their_sets():
    plan, _ = catalog.plan_upsert(
        key="pro",
        name="Pro",
        quotas={"seo": 10, "aeo": 5},
        per_seat=["seo"],
        features=["sso", "csv-export"],
        overage={"seo": 1},
    )

    catalog.plan_upsert(
        key="pro", name="Pro", per_seat=["aeo"], features=["audit-log"], overage={"aeo": 3}
    )

    assert dict(plan.quotas.values_list("primitive", "per_seat")) == {"seo": False, "aeo": True}
    assert dict(plan.quotas.values_list("primitive", "overage")) == {"seo": "block", "aeo": "bill"}
    assert list(plan.features.values_list("feature", flat=True)) == ["audit-log"]

    catalog.plan_upsert(key="pro", name="Pro", per_seat=[], features=[], overage={})
    assert not plan.quotas.filter(per_seat=True).exists()
    assert not plan.quotas.filter(overage="bill").exists()
    assert not plan.features.exists()


@pytest.mark.parametrize("ref", ["key", "pk"])
def test_plan_upsert_finds_the_kit_by_key_or_id(ref):
    kit = AccountKitFactory(key="kit-pro")
    plan, _ = catalog.plan_upsert(key="pro", name="Pro", account_kit_id=getattr(kit, ref))
    assert plan.account_kit == kit


@pytest.mark.parametrize("detach", [None, ""])
def test_plan_upsert_detaches_the_kit(detach):
    plan = PlanFactory(key="pro", account_kit=AccountKitFactory())
    catalog.plan_upsert(key="pro", name="Pro", account_kit_id=detach)
    plan.refresh_from_db()
    assert plan.account_kit is None


def test_plan_upsert_keeping_its_own_price_is_not_a_conflict():
    PlanFactory(key="pro", stripe_price_id="price_123")
    catalog.plan_upsert(key="pro", name="Pro", stripe_price_id="price_123")
    assert Plan.objects.get(key="pro").stripe_price_id == "price_123"


def test_plans_without_a_price_do_not_conflict():
    catalog.plan_upsert(key="a", name="A", stripe_price_id="")
    catalog.plan_upsert(key="b", name="B", stripe_price_id="")
    assert list(Plan.objects.values_list("stripe_price_id", flat=True)) == ["", ""]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"account_kit_id": "no-such-kit"}, "account_kit_id"),
        ({"account_kit_id": 999999}, "account_kit_id"),
        ({"account_kit_id": "²"}, "account_kit_id"),
        ({"quotas": {"seo": -1}}, "quotas"),
        ({"quotas": {"seo": 1.5}}, "quotas"),
        ({"quotas": {"seo": "10"}}, "quotas"),
        ({"quotas": {"seo": True}}, "quotas"),
        ({"quotas": {"seo": 2**63}}, "quotas"),
        ({"quotas": {"SEO!": 1}}, "quotas"),
        ({"per_seat": ["aeo"]}, "per_seat"),
        ({"per_seat": ["Not A Slug"]}, "per_seat"),
        ({"per_seat": [None]}, "per_seat"),
        ({"features": ["not a slug"]}, "features"),
        ({"features": [""]}, "features"),
        ({"features": ["f" * 65]}, "features"),
        ({"features": [None]}, "features"),
        ({"overage": {"aeo": 1}}, "overage"),
        ({"overage": {"seo": -1}}, "overage"),
        ({"overage": {"seo": "free"}}, "overage"),
        ({"overage": {"seo": True}}, "overage"),
        ({"overage": {"seo": float("nan")}}, "overage"),
        ({"period": "fortnight"}, "period"),
        ({"billing_cadence": "1 month"}, "billing_cadence"),
        ({"currency": "us"}, "currency"),
        ({"currency": "u$d"}, "currency"),
        ({"currency": 840}, "currency"),
        ({"stripe_price_id": "price_taken"}, "stripe_price_id"),
        ({"key": "not a slug"}, "key"),
        ({"key": "k" * 65}, "key"),
        ({"name": ""}, "name"),
        ({"name": "n" * 201}, "name"),
    ],
)
def test_plan_upsert_refuses_bad_input_and_changes_nothing(fields, field):
    PlanFactory(key="pro", name="Pro", limits={"seo": 10})
    PlanFactory(key="taken", name="Taken", stripe_price_id="price_taken")
    before = plan_state()
    arguments = {"key": "pro", "name": "Changed", "quotas": {"seo": 99}} | fields

    with pytest.raises(InvalidInput) as excinfo:
        catalog.plan_upsert(**arguments)

    assert field in error_fields(excinfo)
    assert plan_state() == before


# Billing cadences: ISO 8601 durations of whole years, months, weeks and days, from one day
# to five years.

REFUSED_CADENCES = [
    "P0.5M",
    "PT1H",
    "P0D",
    "P0M",
    "P0Y0M0W0D",
    "P10000Y",
    "P5Y1D",
    "P1827D",
    "PT0.001S",
    "P",
    "",
    "p1m",
    "P1M ",
    "P-1M",
    "1 month",
    "monthly",
]
NOT_STRINGS = [1, 30, None, ["P1M"], {"months": 1}, b"P1M"]


@pytest.mark.parametrize("cadence", REFUSED_CADENCES + NOT_STRINGS, ids=repr)
def test_plan_upsert_refuses_a_cadence_out_of_bounds_and_changes_nothing(cadence):
    PlanFactory(key="pro", name="Pro", billing_cadence="P3M", limits={"seo": 10})
    before = plan_state()

    with pytest.raises(InvalidInput) as excinfo:
        catalog.plan_upsert(key="pro", name="Changed", billing_cadence=cadence, quotas={})

    assert error_fields(excinfo) == {"billing_cadence"}
    assert plan_state() == before


@pytest.mark.parametrize(
    ("cadence", "interval"),
    [
        ("P1D", None),
        ("P2W", None),
        ("P1M", "monthly"),
        ("P3M", "quarterly"),
        ("P12M", "yearly"),
        ("P1Y", "yearly"),
        ("P5Y", None),
        ("P1826D", None),
    ],
)
def test_plan_upsert_accepts_a_cadence_from_a_day_to_five_years(cadence, interval):
    plan, _ = catalog.plan_upsert(key="c", name="C", billing_cadence=cadence)
    plan.refresh_from_db()
    assert plan.billing_cadence == cadence
    assert interval_name(plan.billing_cadence) == interval


# Entitlements follow the catalog


def test_a_plan_change_raises_the_version_of_its_subscribers_only():
    PlanFactory(key="pro", limits={"seo": 10})
    PlanFactory(key="basic")
    subscriber, other, bystander = CustomerFactory(), CustomerFactory(), CustomerFactory()
    subscription_set(customer=subscriber, plan_key="pro")
    subscription_set(customer=other, plan_key="basic")
    before = {c.pk: version_of(c.pk) for c in (subscriber, other, bystander)}

    catalog.plan_upsert(key="pro", name="Pro", quotas={"seo": 20})

    assert version_of(subscriber.pk) > before[subscriber.pk]
    assert version_of(other.pk) == before[other.pk]
    assert version_of(bystander.pk) == before[bystander.pk]


def test_a_kit_change_raises_the_version_of_its_holders_only():
    kit = AccountKitFactory(key="kit-pro", allow={"seo": None})
    PlanFactory(key="pro", account_kit=kit)
    PlanFactory(key="basic", account_kit=AccountKitFactory(key="kit-basic"))
    holder, other = CustomerFactory(), CustomerFactory()
    subscription_set(customer=holder, plan_key="pro")
    subscription_set(customer=other, plan_key="basic")
    before = {c.pk: version_of(c.pk) for c in (holder, other)}

    catalog.account_kit_upsert(key="kit-pro", name="Pro", primitives={"seo": 5})

    assert version_of(holder.pk) > before[holder.pk]
    assert version_of(other.pk) == before[other.pk]


def test_a_refused_plan_change_leaves_the_versions_alone():
    PlanFactory(key="pro", limits={"seo": 10})
    subscriber = CustomerFactory()
    subscription_set(customer=subscriber, plan_key="pro")
    before = version_of(subscriber.pk)

    with pytest.raises(InvalidInput):
        catalog.plan_upsert(key="pro", name="Pro", quotas={"seo": 20}, per_seat=["aeo"])

    assert version_of(subscriber.pk) == before
    assert quotas_of(Plan.objects.get(key="pro")) == {"seo": 10}
