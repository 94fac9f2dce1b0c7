"""Each way to misconfigure the app is caught by a system check with an id."""

import inspect
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.core import checks
from django.test import override_settings

from billing_app import checks as billing_checks

# dj-stripe's own checks read the database.
pytestmark = pytest.mark.django_db

BILLING_IDS = {f"billing_app.E{n:03d}" for n in range(1, 11)}


def billing_errors() -> list[checks.CheckMessage]:
    return [m for m in checks.run_checks() if m.id and m.id.startswith("billing_app.")]


def billing_ids() -> list[str]:
    return sorted(m.id for m in billing_errors())


def test_default_settings_pass_every_check():
    assert billing_errors() == []


def test_explicit_good_settings_pass_every_check():
    with override_settings(
        BILLING_QUOTA_EXCEEDED_STATUS=402,
        BILLING_DEFAULT_PERIOD="week",
        BILLING_TIME_ZONE="Europe/Paris",
        BILLING_PAST_DUE_GRACE=timedelta(0),
        BILLING_LATE_USAGE_WINDOW=timedelta(days=1),
        BILLING_METERED_PATHS={"/api/": "api.calls", "/api/health": None},
    ):
        assert billing_errors() == []
    with override_settings(BILLING_METERED_PATHS="tests.views.api_primitive"):
        assert billing_errors() == []


@pytest.mark.parametrize(
    ("setting", "value", "check_id"),
    [
        ("BILLING_QUOTA_EXCEEDED_STATUS", 403, "billing_app.E001"),
        ("BILLING_QUOTA_EXCEEDED_STATUS", "429", "billing_app.E001"),
        ("BILLING_DEFAULT_PERIOD", "fortnight", "billing_app.E002"),
        ("BILLING_DEFAULT_PERIOD", "Month", "billing_app.E002"),
        ("BILLING_TIME_ZONE", "Mars/Olympus_Mons", "billing_app.E003"),
        ("BILLING_TIME_ZONE", "", "billing_app.E003"),
        ("BILLING_TIME_ZONE", "../../etc/passwd", "billing_app.E003"),
        ("BILLING_TIME_ZONE", None, "billing_app.E003"),
        ("BILLING_PAST_DUE_GRACE", 3, "billing_app.E004"),
        ("BILLING_LATE_USAGE_WINDOW", "35 days", "billing_app.E004"),
        ("BILLING_CHANGE_PLAN_USAGE", "keep", "billing_app.E006"),
        ("BILLING_CUSTOMER_MODEL", "billing.Nowhere", "billing_app.E007"),
        ("BILLING_CUSTOMER_MODEL", "Organization", "billing_app.E007"),
        # An installed model, but not the one dj-stripe bills.
        ("BILLING_CUSTOMER_MODEL", "auth.Group", "billing_app.E008"),
        ("BILLING_METERED_PATHS", {"api/": "api.calls"}, "billing_app.E009"),
        ("BILLING_METERED_PATHS", {"/api/": "API calls"}, "billing_app.E009"),
        ("BILLING_METERED_PATHS", "tests.views.no_such_callable", "billing_app.E009"),
        ("BILLING_METERED_PATHS", "tests.views.SEO_PRIMITIVE", "billing_app.E009"),
        ("BILLING_METERED_PATHS", ["/api/"], "billing_app.E009"),
    ],
)
def test_a_bad_setting_fires_its_check(setting, value, check_id):
    with override_settings(**{setting: value}):
        errors = billing_errors()
    assert [e.id for e in errors] == [check_id]
    (error,) = errors
    assert error.level == checks.ERROR
    assert error.hint
    assert setting in error.msg


def test_metered_paths_without_the_middleware_fire_e010():
    middleware = [m for m in settings.MIDDLEWARE if "QuotaMiddleware" not in m]
    with override_settings(BILLING_METERED_PATHS={"/api/": "api.calls"}, MIDDLEWARE=middleware):
        errors = billing_errors()
    assert [e.id for e in errors] == ["billing_app.E010"]
    assert "QuotaMiddleware" in errors[0].msg


def test_dj_stripe_must_bill_the_same_model():
    with override_settings(DJSTRIPE_SUBSCRIBER_MODEL="auth.Group"):
        errors = billing_errors()
    assert [e.id for e in errors] == ["billing_app.E008"]
    assert "DJSTRIPE_SUBSCRIBER_MODEL" in errors[0].msg


def test_model_labels_compare_without_case():
    label = getattr(settings, "DJSTRIPE_SUBSCRIBER_MODEL", settings.AUTH_USER_MODEL)
    with override_settings(BILLING_CUSTOMER_MODEL=label.lower()):
        assert billing_errors() == []


def test_both_bad_durations_are_reported():
    with override_settings(BILLING_PAST_DUE_GRACE=3, BILLING_LATE_USAGE_WINDOW=35):
        errors = billing_errors()
    assert [e.id for e in errors] == ["billing_app.E004", "billing_app.E004"]
    assert {"BILLING_PAST_DUE_GRACE", "BILLING_LATE_USAGE_WINDOW"} == {
        e.msg.split()[0] for e in errors
    }


@pytest.mark.parametrize("app", ["rest_framework", "rest_framework_api_key", "djstripe"])
def test_a_missing_app_fires_e005(app):
    installed = [a for a in settings.INSTALLED_APPS if a != app]
    with override_settings(INSTALLED_APPS=installed):
        errors = billing_errors()
    assert [e.id for e in errors] == ["billing_app.E005"]
    assert repr(app) in errors[0].msg


def test_every_check_id_is_tested():
    """Keeps this module in step with checks.py: a new id needs a case above."""
    source = inspect.getsource(billing_checks)
    assert set(re.findall(r'"(billing_app\.[EW]\d{3})"', source)) == BILLING_IDS
