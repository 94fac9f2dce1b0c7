"""What a host project's tests get: overrides of plans, quotas and features, a frozen
billing clock and the pytest fixtures. Written as a host writes its tests: only the public
API (``billing_app.testutils``, ``billing_app.features``, ``billing_app.client``), the
plugin's fixtures and a metered view over HTTP."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from importlib import import_module
from pathlib import Path

import pytest
from django.test import Client, TestCase
from django.utils import timezone

from billing_app.client import billing
from billing_app.exceptions import BillingImproperlyConfigured, InvalidInput
from billing_app.features import feature_is_active, usage_of
from billing_app.testutils import (
    freeze_billing_clock,
    override_feature,
    override_plan,
    override_quota,
    subscribe,
)

pytestmark = pytest.mark.django_db


def calls(token: str, count: int, primitive: str = "seo") -> list[int]:
    """Status codes of ``count`` metered calls, as a tenant's API client makes them."""
    client = Client(headers={"Authorization": f"Bearer {token}"})
    return [client.post(f"/demo/{primitive}/").status_code for _ in range(count)]


@pytest.fixture
def other_customer(db):
    return billing.customers.create(email="other@example.com")


# override_feature


@pytest.mark.billing_plan(features=["sso"])
def test_override_feature_grants_for_the_block_and_restores(billing_subscribed):
    customer = billing_subscribed
    assert not feature_is_active(customer, "csv-export")
    with override_feature("csv-export"):
        assert feature_is_active(customer, "csv-export")
        assert feature_is_active(customer, "sso")
    assert not feature_is_active(customer, "csv-export")
    with override_feature("sso", active=False):
        assert not feature_is_active(customer, "sso")
    assert feature_is_active(customer, "sso")


@override_feature("csv-export")
def test_override_feature_as_a_decorator(billing_subscribed):
    assert feature_is_active(billing_subscribed, "csv-export")


def test_the_decorator_is_gone_after_its_test(billing_subscribed):
    assert not feature_is_active(billing_subscribed, "csv-export")


def test_override_feature_for_one_customer(billing_subscribed, other_customer):
    subscribe(other_customer)
    with override_feature("sso", customer=billing_subscribed):
        assert feature_is_active(billing_subscribed, "sso")
        assert not feature_is_active(other_customer, "sso")


def test_an_override_binds_a_cached_entitlement_at_once(billing_subscribed):
    """The entitlement is checked (and cached) first: entering and leaving move its
    version, so the next decision sees the override."""
    assert not billing.for_customer(billing_subscribed).has_feature("sso")
    assert not feature_is_active(billing_subscribed, "sso")
    with override_feature("sso"):
        assert feature_is_active(billing_subscribed, "sso")
    assert not feature_is_active(billing_subscribed, "sso")


# override_quota


@pytest.mark.billing_plan(quotas={"seo": 5})
def test_override_quota_is_enforced_and_restored(billing_subscribed, billing_token):
    assert calls(billing_token, 1) == [200]  # the plan's quota, now cached
    with override_quota("seo", 2):
        assert calls(billing_token, 2) == [200, 429]
        assert usage_of(billing_subscribed, "seo").limit == 2
    assert calls(billing_token, 4) == [200, 200, 200, 429]  # 5 again; 4 used before


@pytest.mark.billing_plan(quotas={"seo": 1})
def test_override_quota_none_is_unlimited(billing_subscribed, billing_token):
    with override_quota("seo", None, customer=billing_subscribed):
        assert calls(billing_token, 3) == [200, 200, 200]
        assert usage_of(billing_subscribed, "seo").limit is None
    assert calls(billing_token, 1) == [429]


def test_override_quota_limits_a_customer_without_subscription(billing_customer, billing_token):
    with override_quota("seo", 0, customer=billing_customer):
        assert calls(billing_token, 1) == [429]
    assert calls(billing_token, 1) == [200]


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: override_quota("Not A Slug", 1), "primitive"),
        (lambda: override_quota("seo", -1), "limit"),
        (lambda: override_quota("seo", True), "limit"),
        (lambda: override_feature("not a slug"), "feature"),
        (lambda: override_plan(""), "plan_key"),
    ],
)
def test_a_bad_override_names_its_argument(make, field):
    with pytest.raises(InvalidInput) as refused:
        make()
    assert field in refused.value.fields


# override_plan


def test_override_plan_puts_a_customer_on_a_plan_for_the_block(billing_customer):
    billing.plans.upsert(key="pro", name="Pro", quotas={"seo": 100}, features=["sso"])
    with override_plan("pro", customer=billing_customer):
        assert feature_is_active(billing_customer, "sso")
        usage = billing.for_customer(billing_customer).usage()
        assert (usage.plan, usage.status, usage.quotas) == ("pro", "active", {"seo": 100})
    usage = billing.for_customer(billing_customer).usage()
    assert (usage.plan, usage.quotas) == (None, {})
    assert not feature_is_active(billing_customer, "sso")


def test_overrides_stack_on_an_overridden_plan_in_any_order(billing_customer):
    billing.plans.upsert(key="pro", name="Pro", quotas={"seo": 100}, features=["sso"])
    with override_feature("beta"), override_plan("pro"), override_quota("seo", 7):
        assert feature_is_active(billing_customer, "beta")
        assert feature_is_active(billing_customer, "sso")
        assert usage_of(billing_customer, "seo").limit == 7


def test_override_plan_of_an_unknown_plan_says_so(billing_customer):
    with override_plan("nope"), pytest.raises(BillingImproperlyConfigured, match="nope"):
        feature_is_active(billing_customer, "sso")


@override_quota("seo", 1)
class OverridesOnATestCase(TestCase):
    """A class decorator applies to each test, as ``override_settings`` does."""

    def test_the_quota_applies(self):
        customer = billing.customers.create(email="case@example.com")
        token = billing.for_customer(customer).issue_token()
        self.assertEqual(calls(token, 2), [200, 429])


# The frozen clock


def test_freeze_billing_clock_moves_windows_when_told(billing_customer, billing_token):
    with freeze_billing_clock("2026-01-31 10:00") as clock:
        assert timezone.now() == datetime(2026, 1, 31, 10, tzinfo=UTC)
        subscribe(billing_customer, quotas={"seo": 1})
        assert calls(billing_token, 2) == [200, 429]
        assert usage_of(billing_customer, "seo").resets_at == datetime(2026, 2, 28, 10, tzinfo=UTC)

        clock.advance(days=28, seconds=-1)
        assert calls(billing_token, 1) == [429]
        clock.advance(seconds=1)  # the monthly window from Jan 31 ends on Feb 28
        assert calls(billing_token, 2) == [200, 429]
    assert abs(timezone.now() - datetime.now(UTC)) < timedelta(minutes=1)


def test_freeze_billing_clock_as_a_decorator():
    @freeze_billing_clock(datetime(2030, 6, 1, tzinfo=UTC))
    def frozen():
        return timezone.now()

    assert frozen() == datetime(2030, 6, 1, tzinfo=UTC)
    assert timezone.now().year < 2030


def test_the_billing_clock_fixture_is_frozen_until_moved(billing_clock):
    start = timezone.now()
    assert timezone.now() == start == billing_clock.now
    billing_clock.set("2027-03-01T00:00:00+01:00")
    assert timezone.now() == datetime(2027, 2, 28, 23, tzinfo=UTC)


# The fixtures


def test_billing_customer_is_a_customer_of_the_billed_model(billing_customer, settings):
    label = getattr(settings, "BILLING_CUSTOMER_MODEL", None) or settings.AUTH_USER_MODEL
    assert billing_customer._meta.label_lower == label.lower()
    assert billing.for_customer(billing_customer).subscription() is None


@pytest.mark.billing_plan(quotas={"seo": 2}, features=["sso"], period="week")
def test_billing_subscribed_takes_the_plan_from_its_marker(billing_subscribed, billing_token):
    subscription = billing.for_customer(billing_subscribed).subscription()
    assert (subscription.status, subscription.plan.period) == ("active", "week")
    assert feature_is_active(billing_subscribed, "sso")
    assert calls(billing_token, 3) == [200, 200, 429]


def test_billing_subscribed_without_a_marker_is_unlimited(billing_subscribed, billing_token):
    assert billing.for_customer(billing_subscribed).subscription().status == "active"
    assert calls(billing_token, 3) == [200, 200, 200]


def test_the_plugin_is_declared_for_pytest_to_find():
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    entry_points = pyproject["project"]["entry-points"]["pytest11"]
    assert entry_points == {"billing_app.pytest_plugin": "billing_app.pytest_plugin"}
    plugin = import_module(entry_points["billing_app.pytest_plugin"])
    for fixture in ("billing_customer", "billing_subscribed", "billing_token", "billing_clock"):
        assert hasattr(plugin, fixture)
