"""Every GET of the operator and self-service APIs only reads: no INSERT, UPDATE or DELETE,
whoever asks and whatever the answer (the admin's pages: test_admin.py)."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from billing_app.catalog import services as catalog
from billing_app.conf import customer_is_user
from billing_app.cycles import services as closer
from billing_app.subscriptions import services as subscriptions

from ..factories import UserFactory
from ..utils import use

pytestmark = pytest.mark.django_db

WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


def writes_of(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if WRITES.match(q["sql"])]


@pytest.fixture
def billed(customer):
    """A customer some months into a plan: recorded periods, an open one with usage, a
    late event waiting as an adjustment, and a grantee on a seat."""
    now = timezone.now()
    catalog.account_kit_upsert(key="kit", name="Kit", primitives={"seo": 60, "aeo": None})
    catalog.plan_upsert(
        key="pro",
        name="Pro",
        account_kit_id="kit",
        quotas={"seo": 10, "aeo": 5},
        overage={"seo": "0.5"},
        features=["sso"],
    )
    subscription = subscriptions.subscription_set(
        customer=customer, plan_key="pro", stripe_customer_id="cus_r", at=now - 70 * timedelta(1)
    )
    subscriptions.periods_advance(at=now)
    closer.records_close(at=now)
    use(customer, 12, now)
    use(customer, 2, now - 20 * timedelta(1))  # late, for a recorded period
    grantee = UserFactory()
    subscriptions.seats_manage(
        subscription_id=subscription.pk, operations=[{"type": "add", "grantee_id": grantee.pk}]
    )
    return subscription, grantee


def operator_paths(customer, subscription, grantee) -> list[str]:
    user = f"/v1/users/{customer.pk}"
    return [
        "/v1/plans",
        "/v1/account-kits",
        user,
        f"{user}/billing/subscription",
        f"{user}/billing/usage",
        f"{user}/billing/usage/records",
        f"{user}/billing/usage/records?status=recorded",
        f"{user}/billing/usage/records?status=current",
        f"{user}/billing/usage/records?pageSize=1",
        f"{user}/billing/usage/records/current",
        f"{user}/billing/check?primitive=seo",
        f"{user}/billing/check?primitive=aeo&quantity=100",
        f"/v1/licenses/check?granteeIds={grantee.pk},{customer.pk}&grace=3",
        f"/v1/subscriptions/{subscription.pk}/seats",
        "/v1/schema/",
        "/v1/docs/",
        # Refusals read only too.
        f"{user}/billing/usage/records?status=open",
        f"{user}/billing/check",
        "/v1/users/999999999/billing/usage",
        "/v1/users/not-an-id/billing/subscription",
        "/v1/subscriptions/999999999/seats",
    ]


SELF_SERVICE = ["/billing/subscription", "/billing/usage", "/billing/invoices"]


def assert_reads_only(client, paths, **headers):
    answered = []
    for path in paths:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(path, **headers)
        assert response.status_code < 500, path
        assert writes_of(queries) == [], path
        answered.append(response.status_code)
    return answered


def test_operator_gets_write_nothing(api, customer, billed):
    subscription, grantee = billed
    paths = operator_paths(customer, subscription, grantee)
    statuses = assert_reads_only(api, paths)
    assert statuses[:16] == [200] * 16
    assert statuses[16:] == [400, 400, 404, 404, 404]
    # The next page of records too.
    first = api.get(f"/v1/users/{customer.pk}/billing/usage/records?pageSize=1").json()
    assert assert_reads_only(api, [first["next"]]) == [200]


def test_the_browsable_api_writes_nothing(customer, billed):
    subscription, grantee = billed
    client = APIClient()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    paths = operator_paths(customer, subscription, grantee)[:14]
    statuses = assert_reads_only(client, paths, HTTP_ACCEPT="text/html")
    assert statuses == [200] * 14


def test_self_service_gets_write_nothing(customer, customer_client, billed):
    assert assert_reads_only(customer_client, SELF_SERVICE) == [200, 200, 200]


def test_self_service_gets_for_an_operator_write_nothing(api, customer, billed):
    statuses = assert_reads_only(api, SELF_SERVICE, HTTP_X_BILLING_CUSTOMER=str(customer.pk))
    assert statuses == [200, 200, 200]


def test_self_service_gets_in_a_session_write_nothing(customer, billed):
    # Signed in as the customer (customers are users) or as the grantee on its seat.
    _, grantee = billed
    client = APIClient()
    client.force_login(customer if customer_is_user() else grantee)
    assert assert_reads_only(client, SELF_SERVICE) == [200, 200, 200]


def test_self_service_gets_without_a_subscription_write_nothing(customer, customer_client):
    statuses = assert_reads_only(customer_client, SELF_SERVICE)
    assert statuses == [404, 200, 200]
    assert assert_reads_only(APIClient(), SELF_SERVICE) == [401, 401, 401]


def cursor(**params: str) -> str:
    """A cursor as DRF encodes one, with whatever position it is given."""
    return base64.b64encode(urlencode(params).encode()).decode()


@pytest.mark.parametrize(
    "crafted",
    [
        cursor(p="notadate"),
        cursor(p="2026-13-45"),
        cursor(p="2026-01-01T00:00:00+99:00"),
        cursor(p="\x00"),
        cursor(p="1e5"),
        cursor(r="1", p="x"),
        base64.b64encode(b"p=%ED%A0%80").decode(),  # a lone surrogate, percent-encoded
    ],
)
@pytest.mark.parametrize(
    "path",
    [
        "/v1/users/{id}/billing/usage/records",
        "/v1/users/{id}/billing/credits/ledger",
        "/billing/invoices",
    ],
)
def test_a_crafted_cursor_is_an_invalid_cursor(api, customer, billed, path, crafted):
    """DRF checks a cursor's offset, not its position: one the ordering field cannot take
    is a 404 too, and reads nothing else."""
    response = api.get(
        path.format(id=customer.pk),
        {"cursor": crafted},
        HTTP_X_BILLING_CUSTOMER=str(customer.pk),
    )

    assert response.status_code == 404, response.content
    assert response.json() == {"detail": "Invalid cursor"}
