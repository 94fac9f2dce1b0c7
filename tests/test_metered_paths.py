"""Every request counted: ``BILLING_METERED_PATHS`` makes ``QuotaMiddleware`` count each
request under a path on a primitive, whatever its view, with the reservation, refusals and
headers of ``@metered``; once per request, whatever the view meters itself."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from billing_app.models import UsageCounter, UsageEvent
from billing_app.testutils import subscribe

from .factories import CustomerFactory
from .utils import (
    absent_customer_id,
    assert_refused,
    bearer,
    events_of,
    post_json,
    ratelimit_field,
)

pytestmark = pytest.mark.django_db

COUNTED = {"/test/api/": "api.calls", "/test/api/excluded/": None}


@pytest.fixture(autouse=True)
def counted_paths(settings):
    settings.BILLING_METERED_PATHS = COUNTED


@pytest.fixture
def client(customer_token):
    client = bearer(customer_token)
    client.raise_request_exception = False
    return client


def calls(customer) -> int:
    """The customer's api.calls usage: its events' quantities."""
    return sum(
        UsageEvent.objects.filter(customer_id=customer.pk, primitive="api.calls").values_list(
            "quantity", flat=True
        )
    )


def policies(response) -> dict[str, dict[str, str]]:
    """The RateLimit-Policy list, by primitive."""
    items = [ratelimit_field(item.strip()) for item in response["RateLimit-Policy"].split(",")]
    return {item["name"]: item for item in items}


def test_a_request_under_a_counted_path_is_counted_once(customer, client):
    subscribe(customer, quotas={"api.calls": 3})

    for n in (1, 2, 3):
        response = post_json(client, "/test/api/plain/")
        assert response.status_code == 200, response.content
        assert events_of(customer, "api.calls") == n
        state = ratelimit_field(response["RateLimit"])
        assert (state["name"], state["r"]) == ("api.calls", str(3 - n))

    refused = post_json(client, "/test/api/plain/")
    body = assert_refused(refused, 429, "rate_limited", primitive="api.calls")
    assert body["usage"] == {"current": 3, "limit": 3}
    assert int(refused["Retry-After"]) > 0
    assert calls(customer) == 3


@override_settings(BILLING_QUOTA_EXCEEDED_STATUS=402)
def test_over_the_path_quota_answers_as_the_project_says(customer, client):
    subscribe(customer, quotas={"api.calls": 0})
    assert_refused(post_json(client, "/test/api/plain/"), 402, "usage_limit_exceeded", "api.calls")


def test_paths_outside_the_prefixes_and_prefixes_left_out_are_not_counted(customer, client):
    subscribe(customer, quotas={"api.calls": 0, "seo": 5})

    assert post_json(client, "/test/api/excluded/").status_code == 200
    assert post_json(client, "/test/seo-answer/").status_code == 200  # @metered, not under it
    assert calls(customer) == 0
    assert events_of(customer, "seo") == 1


def test_a_callable_decides_the_primitive(settings, customer, client):
    settings.BILLING_METERED_PATHS = "tests.views.api_primitive"
    subscribe(customer, quotas={"api.calls": 5})

    assert post_json(client, "/test/api/plain/").status_code == 200
    assert post_json(client, "/test/api/excluded/").status_code == 200
    assert calls(customer) == 1


@pytest.mark.parametrize("fail", ["status", "exception"])
def test_a_failed_request_costs_nothing(customer, client, fail):
    subscribe(customer, quotas={"api.calls": 1})

    response = post_json(client, "/test/api/plain/", {"fail": fail})

    assert response.status_code in (503, 500)
    assert calls(customer) == 0
    assert post_json(client, "/test/api/plain/").status_code == 200
    assert calls(customer) == 1


@pytest.mark.parametrize(
    "transactional",
    [pytest.param(True, marks=pytest.mark.django_db(transaction=True)), False],
    ids=["own-transaction", "inside-an-outer-transaction"],
)
def test_under_atomic_requests_the_path_is_counted_before_the_view_and_refunded_after(
    atomic_requests,
    customer,
    client,
    transactional,
):
    subscribe(customer, quotas={"api.calls": 1})

    failed = post_json(client, "/test/api/plain/", {"fail": "exception"})
    succeeded = post_json(client, "/test/api/plain/")

    assert failed.status_code == 500
    assert succeeded.status_code == 200
    assert succeeded.json()["atomic"] is True
    assert calls(customer) == 1


# A view that meters itself, under a counted path


def test_a_metered_view_counts_its_own_primitive_and_the_path_once(customer, client):
    subscribe(customer, quotas={"api.calls": 10, "seo": 1})

    response = post_json(client, "/test/api/seo/")

    assert response.status_code == 200, response.content
    assert (calls(customer), events_of(customer, "seo")) == (1, 1)
    assert set(policies(response)) == {"api.calls", "seo"}
    assert policies(response)["seo"]["q"] == "1"
    # The view's own refusal refuses the request: its path's count is given back.
    assert_refused(post_json(client, "/test/api/seo/"), 429, "rate_limited", primitive="seo")
    assert (calls(customer), events_of(customer, "seo")) == (1, 1)


def test_a_metered_view_of_its_paths_own_primitive_counts_it_once_by_its_quantity(customer, client):
    subscribe(customer, quotas={"api.calls": 10})

    response = post_json(client, "/test/api/pages/", {"pages": 3})

    assert response.status_code == 200
    assert events_of(customer, "api.calls") == 1
    assert calls(customer) == 3
    assert list(policies(response)) == ["api.calls"]


@pytest.fixture
def drf(customer_token):
    from rest_framework.test import APIClient

    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {customer_token}")
    return client


def test_a_drf_view_counts_its_own_primitive_and_the_path_once(customer, drf):
    subscribe(customer, quotas={"api.calls": 10, "seo": 1})

    read = drf.get("/test/api/reports/")
    write = drf.post("/test/api/reports/", {}, format="json")

    assert (read.status_code, write.status_code) == (200, 200)
    assert (calls(customer), events_of(customer, "seo")) == (2, 1)
    assert set(policies(write)) == {"api.calls", "seo"}
    refused = drf.post("/test/api/reports/", {}, format="json")
    assert_refused(refused, 429, "rate_limited", primitive="seo")
    assert (calls(customer), events_of(customer, "seo")) == (2, 1)


def test_a_drf_view_of_its_paths_own_primitive_counts_it_once(customer, drf):
    subscribe(customer, quotas={"api.calls": 10})

    response = drf.post("/test/api/calls/", {}, format="json")

    assert response.status_code == 200, response.content
    assert events_of(customer, "api.calls") == 1
    assert list(policies(response)) == ["api.calls"]
    failed = drf.post("/test/api/calls/", {"fail": "validation"}, format="json")
    assert failed.status_code == 400
    assert events_of(customer, "api.calls") == 1


# Left out


@pytest.mark.parametrize("path", ["/test/api/health/", "/test/api/status/"], ids=["fn", "drf"])
def test_unmetered_views_are_not_counted(customer, client, path):
    subscribe(customer, quotas={"api.calls": 0})

    response = client.get(path)

    assert response.status_code == 200, response.content
    assert "RateLimit" not in response
    assert not UsageEvent.objects.exists()


def test_the_apps_own_endpoints_are_never_counted(settings, customer, client):
    settings.BILLING_METERED_PATHS = {"/": "api.calls"}
    subscribe(customer, quotas={"api.calls": 0})

    assert client.get("/billing/usage").status_code == 200
    assert client.get("/billing/subscription").status_code == 200
    assert post_json(Client(), "/billing/webhook", {}).status_code == 400  # unsigned
    assert not UsageEvent.objects.exists()


@pytest.mark.parametrize("method", ["options", "head"])
def test_options_and_head_to_a_function_view_are_counted(customer, client, method):
    """A function view runs its body for any method."""
    subscribe(customer, quotas={"api.calls": 0})
    assert getattr(client, method)("/test/api/plain/").status_code == 429


def test_an_options_drf_answers_itself_is_not_counted(customer, client):
    subscribe(customer, quotas={"api.calls": 0})
    assert client.options("/test/api/reports/").status_code == 200
    assert client.head("/test/api/reports/").status_code == 429
    assert not UsageCounter.objects.exists()


# Who is counted


def test_a_request_without_credentials_is_let_through_uncounted(customer):
    subscribe(customer, quotas={"api.calls": 0})

    plain = post_json(Client(), "/test/api/plain/")
    drf = Client().get("/test/api/reports/")

    assert plain.status_code == 200  # its view serves anonymous requests
    assert drf.status_code in (401, 403)  # its view does not: it says so itself
    assert not UsageEvent.objects.exists()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param(lambda op, tk, other: {"Authorization": "Bearer tk_nope.nope"}, 401, id="bad"),
        pytest.param(lambda op, tk, other: {"Authorization": f"Bearer {op}"}, 401, id="operator"),
        pytest.param(
            lambda op, tk, other: {"Authorization": f"Bearer {tk}", "X-Billing-Customer": other},
            403,
            id="token-naming-another",
        ),
        pytest.param(
            lambda op, tk, other: {
                "Authorization": f"Bearer {op}",
                "X-Billing-Customer": str(absent_customer_id()),
            },
            404,
            id="unknown-customer",
        ),
    ],
)
def test_credentials_that_name_no_customer_are_refused(
    operator_key, customer_token, customer, headers, status
):
    subscribe(customer, quotas={"api.calls": 5})
    other = str(CustomerFactory().pk)
    client = Client(headers=headers(operator_key, customer_token, other))

    response = post_json(client, "/test/api/plain/")

    assert response.status_code == status, response.content
    assert not UsageEvent.objects.exists()


def test_an_operator_key_naming_a_customer_counts_for_that_customer(operator_key, customer):
    subscribe(customer, quotas={"api.calls": 5})
    client = bearer(operator_key, **{"X-Billing-Customer": str(customer.pk)})

    assert post_json(client, "/test/api/plain/").status_code == 200
    assert calls(customer) == 1
