"""Gating beyond metering: one decision (``features.feature_check``) behind
``@requires_feature``, the DRF ``HasFeature`` permission, the ``{% feature %}`` and
``{% usage %}`` tags and the Jinja2 globals. Every check only reads."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.template import TemplateSyntaxError, engines
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from billing_app.api.permissions import HasFeature
from billing_app.catalog import services as catalog
from billing_app.customers.services import operator_key_create, quota_grant, tenant_token_issue
from billing_app.decorators import requires_feature
from billing_app.entitlements import cache_clear, entitlement_for
from billing_app.exceptions import BillingImproperlyConfigured
from billing_app.features import feature_is_active, usage_of
from billing_app.metering.selectors import usage_rollup
from billing_app.subscriptions import services as subscriptions
from billing_app.testutils import subscribe

from .factories import CustomerFactory
from .utils import absent_customer_id, bearer, billed_user, session_client, use, writes_of

pytestmark = pytest.mark.django_db

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
REFUSED = {
    "error": "feature_not_enabled",
    "feature": "sso",
    "message": "Your plan does not include sso.",
}


@pytest.fixture
def sso_customer(customer):
    subscribe(customer, quotas={"seo": 10}, features=["sso", "csv-export"], plan_key="team")
    return customer


@pytest.fixture
def plain_customer(db):
    customer = CustomerFactory()
    subscribe(customer, quotas={"seo": 10}, plan_key="basic")
    return customer


def token_of(customer) -> str:
    return tenant_token_issue(customer=customer)[1]


# The decision


def test_the_plan_in_force_decides(sso_customer):
    other = CustomerFactory()
    subscribe(other, plan_key="basic")
    assert feature_is_active(sso_customer, "sso")
    assert not feature_is_active(sso_customer, "reports")
    assert not feature_is_active(other, "sso")


def test_a_plan_change_binds_at_once_though_the_entitlement_is_cached(sso_customer):
    client = bearer(token_of(sso_customer))
    assert client.get("/test/sso/").status_code == 200
    cached = entitlement_for(customer_id=sso_customer.pk)
    assert "sso" in cached.features  # this process holds the old entitlement

    catalog.plan_upsert(key="team", name="team", features=["csv-export"])
    assert client.get("/test/sso/").status_code == 403

    catalog.plan_upsert(key="team", name="team", features=["sso"])
    assert client.get("/test/sso/").status_code == 200


def test_a_subscription_that_ended_grants_nothing(sso_customer):
    subscriptions.subscription_set(customer=sso_customer, plan_key="team", status="canceled")
    response = bearer(token_of(sso_customer)).get("/test/sso/")
    assert response.status_code == 403
    assert response.json() == {**REFUSED, "message": "The subscription has ended."}


def test_the_fallback_plan_grants_its_features_after_a_cancel(sso_customer, settings):
    catalog.plan_upsert(key="free", name="Free", features=["sso"])
    settings.BILLING_FALLBACK_PLAN = "free"
    subscriptions.subscription_set(customer=sso_customer, plan_key="team", status="canceled")
    assert feature_is_active(sso_customer, "sso")
    assert not feature_is_active(sso_customer, "csv-export")


def test_past_due_keeps_features_during_its_grace_only(sso_customer, clock):
    subscriptions.subscription_set(customer=sso_customer, plan_key="team", status="past_due")
    assert feature_is_active(sso_customer, "sso")
    clock.set(clock.now + timedelta(days=3, seconds=1))
    assert not feature_is_active(sso_customer, "sso")


def test_a_customer_without_subscription_has_no_feature(customer):
    assert not feature_is_active(customer, "sso")
    assert not feature_is_active(AnonymousUser(), "sso")
    assert not feature_is_active(None, "sso")


# @requires_feature


def test_a_granted_customer_gets_the_view(sso_customer):
    response = bearer(token_of(sso_customer)).get("/test/sso/")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


def test_an_api_client_without_the_feature_gets_403_json(plain_customer):
    response = bearer(token_of(plain_customer)).get("/test/sso/")
    assert response.status_code == 403
    assert response.json() == REFUSED


def test_a_signed_in_session_is_gated_too(sso_customer, plain_customer):
    assert session_client(sso_customer).get("/test/sso/").status_code == 200
    response = session_client(plain_customer).get("/test/sso/")
    assert response.status_code == 403
    assert response.json() == REFUSED  # no Accept: text/html, so JSON


def test_a_browser_without_the_feature_gets_the_403_page(plain_customer):
    response = session_client(plain_customer, headers=BROWSER).get("/test/sso/")
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/html")
    assert [t.name for t in response.templates] == ["billing_app/feature_not_enabled.html"]
    assert response.context["feature"] == "sso"
    assert "Your plan does not include sso." in response.content.decode()


def test_a_browser_not_signed_in_is_sent_to_log_in(db):
    response = Client(headers=BROWSER).get("/test/sso/?tab=1")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/test/sso/%3Ftab%3D1"


def test_an_api_client_without_credentials_gets_401(db):
    response = Client().get("/test/sso/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="billing"'


def test_a_bad_token_is_401_even_from_a_browser(db):
    response = bearer("tk_nope.nope", **BROWSER).get("/test/sso/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid or revoked key."}


def test_an_operator_acts_for_the_customer_it_names(sso_customer, plain_customer):
    key = operator_key_create(name="backend")[1]
    named = bearer(key, **{"X-Billing-Customer": str(sso_customer.pk)})
    assert named.get("/test/sso/").status_code == 200
    other = bearer(key, **{"X-Billing-Customer": str(plain_customer.pk)})
    assert other.get("/test/sso/").json() == REFUSED
    assert bearer(key).get("/test/sso/").status_code == 401
    missing = bearer(key, **{"X-Billing-Customer": str(absent_customer_id())})
    assert missing.get("/test/sso/").status_code == 404


def test_a_token_may_not_act_for_another_customer(sso_customer, plain_customer):
    client = bearer(token_of(plain_customer), **{"X-Billing-Customer": str(sso_customer.pk)})
    response = client.get("/test/sso/")
    assert response.status_code == 403
    assert response.json() == {"detail": "A tenant token acts for its own customer only."}


def test_a_refused_feature_costs_no_quota(plain_customer):
    """The middleware reserves before the view runs; the refusal is an error answer, so
    the reservation is refunded."""
    response = bearer(token_of(plain_customer)).post("/test/metered-export/")
    assert response.status_code == 403
    assert usage_rollup(customer_id=plain_customer.pk).usage.get("seo", 0) == 0


def test_a_granted_metered_view_is_metered(sso_customer):
    response = bearer(token_of(sso_customer)).post("/test/metered-export/")
    assert response.status_code == 200
    assert usage_rollup(customer_id=sso_customer.pk).usage == {"seo": 1}


def test_checking_a_feature_writes_nothing(sso_customer, plain_customer):
    clients = [bearer(token_of(sso_customer)), bearer(token_of(plain_customer)), Client()]
    for client in clients:
        with CaptureQueriesContext(connection) as queries:
            client.get("/test/sso/")
        assert writes_of(queries) == []


@pytest.mark.parametrize("name", ["", "Not A Slug", "sso!", None])
def test_a_bad_feature_name_fails_at_import_not_at_request(name):
    with pytest.raises(BillingImproperlyConfigured):
        requires_feature(name)
    with pytest.raises(BillingImproperlyConfigured):
        HasFeature(name)


# DRF


def test_has_feature_grants_and_refuses(sso_customer, plain_customer):
    granted = bearer(token_of(sso_customer)).get("/test/export/")
    assert (granted.status_code, granted.json()) == (200, {"ok": True})
    refused = bearer(token_of(plain_customer)).get("/test/export/")
    assert refused.status_code == 403
    assert refused.json() == {**REFUSED, "feature": "csv-export", "message": "Your plan does "
                              "not include csv-export."}  # fmt: skip


def test_has_feature_without_credentials_is_drf_not_authenticated(db):
    response = APIClient().get("/test/export/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="billing"'
    # As IsAuthenticated: with only session authentication, DRF can name no scheme, so 403.
    assert APIClient().get("/test/session-export/").status_code == 403


def test_has_feature_works_with_a_session(sso_customer):
    client = APIClient()
    client.force_login(billed_user(sso_customer))
    assert client.get("/test/session-export/").status_code == 200


def test_has_feature_composes(customer):
    subscribe(customer, features=["csv-export"])
    assert bearer(token_of(customer)).get("/test/either/").status_code == 200
    catalog.plan_upsert(key=f"test-{customer.pk}", name="x", features=[])
    assert bearer(token_of(customer)).get("/test/either/").status_code == 403


def test_has_feature_is_one_class_per_feature():
    assert HasFeature("sso") is HasFeature("sso")
    assert HasFeature("sso") is not HasFeature("csv-export")
    assert HasFeature("sso").feature == "sso"


# Template tags


def render(source: str, request=None, **context) -> str:
    template = engines["django"].from_string("{% load billing %}" + source)
    return template.render(context, request=request).strip()


def request_of(customer=None):
    request = RequestFactory().get("/")
    request.user = AnonymousUser() if customer is None else billed_user(customer)
    return request


FEATURE = '{% feature "sso" %}yes{% else %}no{% endfeature %}'


def test_feature_tag_renders_the_branch_the_plan_decides(sso_customer, plain_customer):
    assert render(FEATURE, request_of(sso_customer)) == "yes"
    assert render(FEATURE, request_of(plain_customer)) == "no"
    assert render(FEATURE, request_of()) == "no"
    assert render('{% feature "sso" %}yes{% endfeature %}', request_of(plain_customer)) == ""


def test_feature_tag_takes_a_variable_and_a_customer(sso_customer, plain_customer):
    source = "{% feature name for who %}yes{% else %}no{% endfeature %}"
    assert render(source, name="sso", who=sso_customer) == "yes"
    assert render(source, name="sso", who=plain_customer) == "no"
    assert render(source, name="reports", who=sso_customer) == "no"
    assert render(source, name="sso", who=None) == "no"


def test_usage_tag_shows_what_enforcement_uses(sso_customer):
    use(sso_customer, 4, timezone.now())
    quota_grant(customer=sso_customer, primitive="seo", amount=5, reason="launch")
    source = (
        '{% usage "seo" as u %}{{ u.used }}/{{ u.limit }}/{{ u.remaining }}/'
        '{{ u.resets_at|date:"c" }}'
    )
    window = usage_rollup(customer_id=sso_customer.pk).window
    expected = f"4/15/11/{timezone.localtime(window.end).isoformat()}"
    assert render(source, request_of(sso_customer)) == expected


def test_usage_of_an_unlimited_primitive_has_no_limit(sso_customer):
    use(sso_customer, 2, timezone.now(), primitive="aeo")
    usage = usage_of(sso_customer, "aeo")
    assert (usage.used, usage.limit, usage.remaining, usage.unlimited) == (2, None, None, True)
    source = '{% usage "aeo" for who as u %}{{ u.used }} {{ u.limit|default:"unlimited" }}'
    assert render(source, who=sso_customer) == "2 unlimited"


def test_usage_past_the_limit_is_exceeded_with_nothing_left(sso_customer):
    use(sso_customer, 12, timezone.now())
    usage = usage_of(sso_customer, "seo")
    assert (usage.used, usage.remaining, usage.exceeded, usage.percent) == (12, 0, True, 100)


def test_usage_without_a_customer_is_none(db):
    source = '{% usage "seo" as u %}{% if u is None %}none{% endif %}'
    assert render(source, request_of()) == "none"


def test_a_page_reads_its_customer_once_however_many_tags(sso_customer):
    one = FEATURE + '{% usage "seo" as u %}'
    many = FEATURE * 5 + '{% feature "csv-export" %}{% endfeature %}'
    many += '{% usage "seo" as a %}{% usage "aeo" as b %}{% usage "email.send" as c %}'
    counts = []
    for source in (one, many):
        request = request_of(sso_customer)
        cache_clear()
        with CaptureQueriesContext(connection) as queries:
            render(source, request)
        assert writes_of(queries) == []
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_tags_without_the_request_fail_loudly(sso_customer):
    with pytest.raises(BillingImproperlyConfigured, match=r"context_processors\.request"):
        render(FEATURE)
    with pytest.raises(BillingImproperlyConfigured, match=r"context_processors\.request"):
        render('{% usage "seo" as u %}')


@pytest.mark.parametrize(
    "source",
    [
        "{% feature %}{% endfeature %}",
        '{% feature "sso" "csv" %}{% endfeature %}',
        '{% feature "sso" to who %}{% endfeature %}',
        '{% feature "sso" %}',
        '{% usage "seo" %}',
        '{% usage "seo" u %}',
        '{% usage "seo" for as u %}',
    ],
)
def test_a_malformed_tag_is_a_template_syntax_error(source):
    with pytest.raises(TemplateSyntaxError):
        render(source)


# Jinja2


def jinja_render(source: str, **context) -> str:
    from billing_app.jinja import environment

    return environment().from_string(source).render(**context).strip()


def test_jinja_globals_decide_as_the_tags_do(sso_customer, plain_customer):
    use(sso_customer, 3, timezone.now())
    source = (
        '{% if feature("sso") %}yes{% else %}no{% endif %} '
        '{% set u = usage("seo") %}{{ u.used }}/{{ u.limit }}/{{ u.remaining }}'
    )
    assert jinja_render(source, request=request_of(sso_customer)) == "yes 3/10/7"
    assert jinja_render(source, request=request_of(plain_customer)) == "no 0/10/10"
    assert jinja_render('{{ feature("sso", customer=who) }}', who=sso_customer) == "True"
    with pytest.raises(BillingImproperlyConfigured):
        jinja_render('{{ feature("sso") }}')


def test_jinja_install_adds_to_an_existing_environment():
    from jinja2 import Environment

    from billing_app.jinja import install

    env = Environment()
    env.globals["site"] = "kept"
    assert install(env) is env
    assert {"feature", "usage", "site"} <= set(env.globals)


def test_the_django_jinja2_backend_finds_the_request(sso_customer):
    from django.template.backends.jinja2 import Jinja2

    backend = Jinja2(
        {
            "NAME": "jinja",
            "DIRS": [],
            "APP_DIRS": False,
            "OPTIONS": {"environment": "billing_app.jinja.environment"},
        }
    )
    template = backend.from_string('{{ "on" if feature("sso") else "off" }}')
    assert template.render({}, request=request_of(sso_customer)) == "on"
