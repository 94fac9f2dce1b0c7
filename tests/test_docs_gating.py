"""The code in docs/howto/gating.md runs. Its test examples (the Python after "## Test it")
are this module's tests, run with the plugin's fixtures against a host whose
``/reports/`` is metered on seo; the samples before them run in order in one test, and
its templates render for a customer on the plan the samples make."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.template import engines
from django.test import RequestFactory

from .utils import billed_user

DOC = Path(__file__).parents[1] / "docs" / "howto" / "gating.md"
TEXT = DOC.read_text()
GUIDE, _, TESTING = TEXT.partition("## Test it")
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(text: str, language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(text) if lang == language]


pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.urls_docs")]

# The examples define test functions (and import what they use): they become this
# module's tests, as they would be in a host project's test module.
for _code in blocks(TESTING, "python"):
    exec(compile(_code, str(DOC), "exec"), globals())


def test_the_testing_examples_are_collected():
    examples = re.findall(r"^def (test_\w+)", TESTING, re.MULTILINE)
    assert len(examples) >= 6
    assert all(callable(globals()[name]) for name in examples)


def test_the_samples_run_in_order(customer):
    namespace: dict = {}
    for code in blocks(GUIDE, "python"):
        exec(compile(code, str(DOC), "exec"), namespace)

    from billing_app.client import billing

    billing.for_customer(customer).set_subscription(plan_key="team", status="active")
    request = RequestFactory().get("/", headers={"Accept": "text/html"})
    request.user = billed_user(customer)
    assert namespace["sso_settings"](request).status_code == 200
    assert namespace["export_button_label"](request) == "Export CSV"
    assert namespace["environment"]().globals["site_name"] == "Acme"
    assert namespace["start_export"](customer) == "started"
    assert namespace["reports_left"](customer) == 1000

    billing.for_customer(customer).set_subscription(plan_key="starter", status="active")
    request = RequestFactory().get("/", headers={"Accept": "text/html"})
    request.user = billed_user(customer)
    refused = namespace["sso_settings"](request)
    assert refused.status_code == 403
    assert b"Your plan does not include sso." in refused.content
    assert namespace["export_button_label"](request) == "Upgrade to export"
    assert namespace["start_export"](customer) == "Your plan does not include csv-export."
    assert namespace["reports_left"](customer) == 100


def test_the_template_sample_renders(customer):
    from billing_app.client import billing

    billing.plans.upsert(key="team", name="Team", quotas={"seo": 1000}, features=["sso"])
    billing.for_customer(customer).set_subscription(plan_key="team", status="active")
    billing.for_customer(customer).record("seo", 3)
    (source,) = blocks(GUIDE, "django")
    request = RequestFactory().get("/")
    request.user = billed_user(customer)

    page = " ".join(engines["django"].from_string(source).render({}, request=request).split())

    assert "Single sign-on" in page and "Upgrade" not in page
    assert "3 of 1000 SEO reports used, 997 left, resets" in page
    assert '<progress max="100" value="0">' in page
