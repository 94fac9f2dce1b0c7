"""The OpenAPI schema tells the truth. schemathesis sends every operation of
``/v1/schema/`` what the schema allows and what it does not, as an operator (with
``X-Billing-Customer`` naming the customer) and as the customer's tenant token, and checks
each answer against the schema: no server error, and the status, content type, headers
and body each documented.

Bounded and deterministic: a fixed seed, derandomized, a fixed number of examples per
operation. Run on PostgreSQL under the default settings only (one of scripts/test's four
runs): the schema and the views are the same in the others.
"""

from __future__ import annotations

import zlib
from types import SimpleNamespace
from typing import Any

import pytest
import schemathesis
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import ignored_auth

from billing_app.catalog import services as catalog
from billing_app.customers import services as customers
from billing_app.metering.services import usage_record
from billing_app.models import Subscription
from billing_app.subscriptions.services import seats_manage

from ..factories import CustomerFactory, UserFactory
from ..utils import make_invoice, subscribe_on_stripe

MAX_EXAMPLES = 25

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 11,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
        # Every boundary and wrong type the schema implies, then random data.
        "phases": {"coverage": {"enabled": True}, "fuzzing": {"enabled": True}},
        "checks": {
            # Business rules refuse schema-valid input (an unknown plan key), and DRF takes
            # some schema-invalid input ("5" for an integer): those are not lies.
            "positive_data_acceptance": {"enabled": False},
            "negative_data_rejection": {"enabled": False},
        },
    }
)

if connection.vendor != "postgresql" or settings.SETTINGS_MODULE != "tests.settings":
    pytest.skip("one configuration is enough: PostgreSQL, tests.settings", allow_module_level=True)

schema = schemathesis.openapi.from_wsgi("/v1/schema/?format=json", WSGIHandler(), config=CONFIG)


@pytest.fixture
def world(db, stripe_stub):
    """A customer on a Stripe-backed plan with a kit, usage, an invoice and a seat, and the
    credentials of an operator and of the customer."""
    catalog.account_kit_upsert(
        key="kit_pro", name="Pro kit", primitives={"seo": 60, "aeo": None, "email.send": None}
    )
    catalog.plan_upsert(
        key="pro",
        name="Pro",
        account_kit_id="kit_pro",
        stripe_price_id="price_pro",
        quotas={"seo": 100, "aeo": 5, "email.send": 10},
        overage={"aeo": "0.5"},
        per_seat=["email.send"],
        features=["sso"],
    )
    catalog.plan_upsert(key="basic", name="Basic", stripe_price_id="price_basic")
    stripe_stub.price("price_pro")
    stripe_stub.price("price_basic")
    customer = CustomerFactory()
    stripe_customer, _ = subscribe_on_stripe(stripe_stub, customer, quantity=3)
    make_invoice(stripe_stub, stripe_customer, created=1_767_225_600)
    usage_record(customer_id=customer.pk, primitive="seo", quantity=3)
    subscription = Subscription.objects.get(customer=customer)
    seats_manage(
        subscription_id=subscription.pk,
        operations=[{"type": "add", "grantee_id": str(UserFactory().pk)}],
    )
    operator = customers.operator_key_create(name="fuzz")[1]
    tenant = customers.tenant_token_issue(customer=customer)[1]
    # schemathesis calls Django's WSGI handler itself, whose request signals would close the
    # test's database connection: keep it open, as Django's test client does.
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield SimpleNamespace(
        customer=customer,
        subscription=subscription,
        credentials=[
            {"Authorization": f"Bearer {operator}", "X-Billing-Customer": str(customer.pk)},
            {"Authorization": f"Bearer {tenant}"},
        ],
    )
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@schema.parametrize()
@hypothesis_settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_answer_is_the_one_the_schema_documents(case: Any, world: Any) -> None:
    # About half the cases name the customer and subscription that exist, to get past the
    # 404; which ones is decided by the generated value, so that runs repeat.
    for name, known in (("user_id", world.customer.pk), ("subscription_id", world.subscription.pk)):
        value = (case.path_parameters or {}).get(name)
        if isinstance(value, str) and zlib.crc32(value.encode("utf-8", "surrogatepass")) % 2:
            case.path_parameters[name] = str(known)
    operator, tenant = world.credentials
    case.call_and_validate(headers=operator)
    # The same answer without credentials was checked with the operator's.
    case.call_and_validate(headers=tenant, excluded_checks=[ignored_auth])
