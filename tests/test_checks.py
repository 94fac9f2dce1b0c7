"""Each way to misconfigure the app is caught by a system check with an id."""

import inspect
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.core import checks
from django.test import override_settings

from billing_app import checks as billing_checks
from billing_app.catalog import services as catalog
from billing_app.models import Plan

from .utils import synced_price

# dj-stripe's own checks read the database.
pytestmark = pytest.mark.django_db

BILLING_IDS = {f"billing_app.E{n:03}" for n in range(1, 13)} | {"billing_app.W001"}


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
        ("BILLING_METERED_PATHS", {"api/": "api.calls"}, "billing_app.E012"),
        ("BILLING_METERED_PATHS", {"/api/": "API calls"}, "billing_app.E012"),
        ("BILLING_METERED_PATHS", "tests.views.no_such_callable", "billing_app.E012"),
        ("BILLING_METERED_PATHS", "tests.views.SEO_PRIMITIVE", "billing_app.E012"),
        ("BILLING_METERED_PATHS", ["/api/"], "billing_app.E012"),
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


@pytest.mark.parametrize(
    "app", ["rest_framework", "rest_framework_api_key", "drf_spectacular_sidecar", "djstripe"]
)
def test_a_missing_app_fires_e005(app):
    installed = [a for a in settings.INSTALLED_APPS if a != app]
    with override_settings(INSTALLED_APPS=installed):
        errors = billing_errors()
    assert [e.id for e in errors] == ["billing_app.E005"]
    assert repr(app) in errors[0].msg


@pytest.mark.parametrize("value", [None, "djstripe_id", "ID"])
def test_dj_stripe_must_link_by_stripe_ids(value):
    with override_settings(DJSTRIPE_FOREIGN_KEY_TO_FIELD=value):
        if value is None:
            del settings.DJSTRIPE_FOREIGN_KEY_TO_FIELD
        errors = billing_errors()
    assert [e.id for e in errors] == ["billing_app.E009"]
    assert "DJSTRIPE_FOREIGN_KEY_TO_FIELD" in errors[0].msg
    assert "before the first migrate" in errors[0].hint


MIDDLEWARE = "billing_app.middleware.QuotaMiddleware"


def test_metered_views_without_the_middleware_fire_e010():
    """tests.urls has @metered views (and DRF ones, which need no middleware)."""
    without = [m for m in settings.MIDDLEWARE if m != MIDDLEWARE]
    with override_settings(MIDDLEWARE=without):
        errors = billing_errors()
    assert [e.id for e in errors] == ["billing_app.E010"]
    assert errors[0].msg == (
        f"{MIDDLEWARE} is not in MIDDLEWARE, but 9 view(s) are @metered: demo/aeo/, "
        "demo/email.send/, demo/seo/, ..."
    )
    assert MIDDLEWARE in errors[0].hint


def test_no_metered_view_needs_no_middleware():
    """The app's own URLs meter nothing through the middleware (DRF views use the mixin)."""
    without = [m for m in settings.MIDDLEWARE if m != MIDDLEWARE]
    with override_settings(MIDDLEWARE=without, ROOT_URLCONF="billing_app.urls"):
        assert billing_errors() == []


def test_metered_views_are_found_through_includes_and_other_decorators():
    from django.urls import include, path
    from django.views.decorators.http import require_POST

    from billing_app.decorators import metered

    @require_POST
    @metered("seo")
    def report(request): ...

    inner = [path("report/", report)]
    patterns = [path("api/", include((inner, "inner")))]
    assert list(billing_checks._metered_views(patterns)) == ["api/report/"]


def test_a_broken_urlconf_is_left_to_djangos_own_checks():
    without = [m for m in settings.MIDDLEWARE if m != MIDDLEWARE]
    with override_settings(MIDDLEWARE=without, ROOT_URLCONF="tests.no_such_urls"):
        assert billing_checks.check_metered_views() == []


def without_request_processor(engine: dict) -> dict:
    options = engine.get("OPTIONS", {})
    processors = [p for p in options.get("context_processors", []) if not p.endswith(".request")]
    return {**engine, "OPTIONS": {**options, "context_processors": processors}}


def test_template_tags_without_the_request_in_the_context_warn_w001():
    engines = [without_request_processor(engine) for engine in settings.TEMPLATES]
    with override_settings(TEMPLATES=engines):
        (warning,) = billing_errors()
    assert (warning.id, warning.level) == ("billing_app.W001", checks.WARNING)
    assert "django.template.context_processors.request" in warning.msg
    assert "{% feature %}" in warning.hint


def test_one_engine_with_the_request_is_enough():
    jinja_only = {"BACKEND": "django.template.backends.jinja2.Jinja2", "OPTIONS": {}}
    plain = {**without_request_processor(settings.TEMPLATES[0]), "NAME": "emails"}
    with override_settings(TEMPLATES=[plain, *settings.TEMPLATES]):
        assert billing_errors() == []
    with override_settings(TEMPLATES=[jinja_only]):
        assert billing_errors() == []  # no DjangoTemplates engine: the tags are not used


def test_every_check_id_is_tested():
    """Keeps this module in step with checks.py: a new id needs a case above."""
    source = inspect.getsource(billing_checks)
    assert set(re.findall(r'"(billing_app\.[EW]\d{3})"', source)) == BILLING_IDS


def database_errors() -> list[checks.CheckMessage]:
    return [
        message
        for message in checks.run_checks(databases=["default"])
        if message.id and message.id.startswith("billing_app.")
    ]


def test_a_system_check_finds_plans_in_another_currency_than_their_price(stripe_stub):
    synced_price(stripe_stub, "price_eur", "eur")
    catalog.plan_upsert(key="eu", name="EU", stripe_price_id="price_eur", currency="eur")
    assert database_errors() == []

    Plan.objects.filter(key="eu").update(currency="usd")  # as a plan set before the sync
    (error,) = database_errors()
    assert error.id == "billing_app.E011"
    assert "'eu'" in error.msg and "eur" in error.msg
    assert error.hint
    # Not among the checks that run without a database.
    assert [m for m in checks.run_checks() if m.id == "billing_app.E011"] == []
