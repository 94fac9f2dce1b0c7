"""The OpenAPI document (``/v1/schema/``) says what the API does: who may call each
endpoint, the errors each answers and the shapes of their bodies, the bounds of its
inputs. The rarer answers (refusals, conflicts, Stripe failures) are checked against it
here; tests/api/test_schema_fuzz.py sends everything else."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema_rs
import pytest
from django.test import Client

from billing_app.catalog.services import plan_upsert
from billing_app.subscriptions.services import subscription_set
from billing_app.testutils import subscribe

from ..factories import PlanFactory
from ..utils import refuse

METHODS = {"get", "put", "post", "patch", "delete"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    response = Client().get("/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def component(document: dict[str, Any], name: str) -> dict[str, Any]:
    return document["components"]["schemas"][name]


def body_schema(document: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    response = document["paths"][path][method]["responses"][str(status)]
    return response["content"]["application/json"]["schema"]


def assert_documented(document: dict[str, Any], path: str, method: str, response: Any) -> None:
    """``response`` has a status the operation documents, and a body of its schema."""
    responses = document["paths"][path][method]["responses"]
    assert str(response.status_code) in responses, (response.status_code, sorted(responses))
    schema = body_schema(document, path, method, response.status_code)
    # The components travel with the schema, so that its references resolve.
    validator = jsonschema_rs.validator_for({**schema, "components": document["components"]})
    errors = [error.message for error in validator.iter_errors(response.json())]
    assert errors == [], response.json()


def test_the_document_is_the_same_every_time():
    """Schema generation must not change what the next generation sees."""
    first, second = (Client().get("/v1/schema/", {"format": "json"}).json() for _ in range(2))
    assert first == second
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(second)))
    assert refs <= set(second["components"]["schemas"])


def test_the_document_is_openapi_3_1_with_a_title(document):
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "billing_app API"


def test_operator_endpoints_take_an_operator_key_or_a_session_with_the_permission(document):
    schemes = document["components"]["securitySchemes"]
    v1 = [operation for path, _, operation in operations(document) if path.startswith("/v1/")]

    assert v1
    assert all(op["security"] == [{"operatorKey": []}, {"session": []}] for op in v1)
    assert "billing_app.operate" in schemes["session"]["description"]


def test_self_service_takes_a_token_a_session_or_an_operator_key_naming_the_customer(document):
    schemes = document["components"]["securitySchemes"]
    own = [op for path, _, op in operations(document) if path.startswith("/billing/")]

    assert own
    assert all(
        op["security"]
        == [{"tenantToken": []}, {"operatorKey": [], "billingCustomer": []}, {"session": []}]
        for op in own
    )
    assert schemes["billingCustomer"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Billing-Customer",
        "description": schemes["billingCustomer"]["description"],
    }


def test_every_operation_documents_the_errors_any_request_can_meet(document):
    for path, method, operation in operations(document):
        responses = operation["responses"]
        expected = {"401", "403", "406"}
        if "requestBody" in operation:
            expected |= {"400", "415"}
        if path.startswith("/billing/"):
            expected.add("404")
        assert expected <= set(responses), (method, path, sorted(responses))
        assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                assert response["content"]["application/json"]["schema"], (path, status)


def test_errors_have_one_shape_each(document):
    assert component(document, "Error")["required"] == ["detail"]
    assert component(document, "FieldErrors")["additionalProperties"]["anyOf"][0] == {
        "type": "array",
        "items": {"type": "string"},
    }
    refusal = component(document, "Refusal")
    assert refusal["required"] == ["error", "message", "primitive"]
    assert set(refusal["properties"]) == {
        "error",
        "message",
        "primitive",
        "usage",
        "credits",
        "resetsAt",
    }
    assert set(refusal["properties"]["usage"]["properties"]) == {"current", "limit"}
    usage = "/v1/users/{user_id}/billing/usage"
    assert body_schema(document, usage, "post", 429) == {"$ref": "#/components/schemas/Refusal"}
    assert {"$ref": "#/components/schemas/Refusal"} in body_schema(document, usage, "post", 403)[
        "anyOf"
    ]


def test_batches_and_seat_operations_are_bounded(document):
    events = component(document, "UsageBatchInput")["properties"]["events"]
    seats = document["paths"]["/v1/subscriptions/{subscription_id}/seats"]["put"]
    operations_ = seats["requestBody"]["content"]["application/json"]["schema"]

    assert (events["minItems"], events["maxItems"]) == (1, 1000)
    assert (operations_["minItems"], operations_["maxItems"]) == (1, 100)


def test_primitive_slugs_have_their_pattern_as_values_and_as_keys(document):
    slug = "^[a-z0-9][a-z0-9._-]*$"
    plan = component(document, "PlanInput")["properties"]
    check = document["paths"]["/v1/users/{user_id}/billing/check"]["get"]["parameters"]

    assert component(document, "UsageRecordInput")["properties"]["primitive"]["pattern"] == slug
    assert component(document, "UsageBatchEvent")["properties"]["primitive"]["pattern"] == slug
    assert next(p for p in check if p["name"] == "primitive")["schema"]["pattern"] == slug
    assert plan["perSeat"]["items"]["pattern"] == slug
    for keyed in (plan["quotas"], plan["overage"]):
        assert keyed["propertyNames"] == {"pattern": slug}
    kit = component(document, "AccountKitInput")["properties"]["primitives"]
    assert kit["propertyNames"] == {"pattern": slug}


def test_customer_ids_are_integers_or_strings(document):
    either = {"oneOf": [{"type": "integer"}, {"type": "string"}]}

    assert component(document, "Customer")["properties"]["id"] == either
    assert component(document, "Subscription")["properties"]["customerId"] == either
    user_id = component(document, "UsageBatchEvent")["properties"]["userId"]
    assert user_id["oneOf"] == either["oneOf"]
    assert component(document, "Seat")["properties"]["granteeId"]["oneOf"] == either["oneOf"]


@pytest.mark.parametrize(
    ("name", "field", "format_"),
    [
        ("Subscription", "currentPeriodStart", "date-time"),
        ("Subscription", "currentPeriodEnd", "date-time"),
        ("Subscription", "endedAt", "date-time"),
        ("Subscription", "accountKitId", None),
        ("SelfSubscription", "id", None),
        ("SelfSubscription", "currentPeriodEnd", "date-time"),
        ("Invoice", "paidAt", "date-time"),
        ("Invoice", "pdfUrl", None),
        ("Check", "limit", None),
        ("WindowUsage", "remaining", None),
        ("UsageEvent", "idempotencyKey", None),
        ("Plan", "accountKitId", None),
        ("CycleRecord", "closedAt", "date-time"),
    ],
)
def test_fields_that_may_be_null_say_so(document, name, field, format_):
    schema = component(document, name)["properties"][field]

    assert "null" in schema["type"], schema
    assert schema.get("format") == format_


def test_operations_describe_themselves_not_the_base_view(document):
    descriptions = [op.get("description", "") for _, _, op in operations(document)]
    assert not any("REST_FRAMEWORK" in text for text in descriptions)


# --- the rarer answers, against the document ------------------------------------------

USAGE = "/v1/users/{user_id}/billing/usage"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("quotas", "primitives", "status_setting", "status"),
    [
        ({"seo": 1}, None, None, 429),
        ({"seo": 1}, None, 402, 402),
        ({"seo": 1}, ["aeo"], None, 403),
    ],
    ids=["quota-429", "quota-402", "not-in-kit"],
)
def test_refusals_are_documented(
    settings, document, api, customer, quotas, primitives, status_setting, status
):
    if status_setting:
        settings.BILLING_QUOTA_EXCEEDED_STATUS = status_setting
    subscribe(customer, quotas=quotas, primitives=primitives)
    url = USAGE.replace("{user_id}", str(customer.pk))
    if primitives is None:
        assert api.post(url, {"primitive": "seo"}, format="json").status_code == 201

    response = api.post(url, {"primitive": "seo"}, format="json")

    assert response.status_code == status
    assert_documented(document, USAGE, "post", response)


@pytest.mark.django_db
def test_an_inactive_subscription_refusal_is_documented(document, api, customer):
    subscribe(customer, quotas={"seo": 5}, status="canceled")

    response = api.post(
        USAGE.replace("{user_id}", str(customer.pk)), {"primitive": "seo"}, format="json"
    )

    assert (response.status_code, response.json()["error"]) == (402, "subscription_inactive")
    assert_documented(document, USAGE, "post", response)


@pytest.mark.django_db
def test_a_refusal_for_want_of_credits_is_documented(document, api, customer):
    plan_upsert(key="developer", name="Developer", credit_costs={"seo": 2})
    subscription_set(customer=customer, plan_key="developer")

    response = api.post(
        USAGE.replace("{user_id}", str(customer.pk)), {"primitive": "seo"}, format="json"
    )

    assert (response.status_code, response.json()["error"]) == (402, "insufficient_credits")
    assert response.json()["credits"] == {"balance": 0, "cost": 2}
    assert_documented(document, USAGE, "post", response)


@pytest.mark.django_db
def test_a_key_reused_with_another_body_is_a_documented_conflict(document, api, customer):
    subscribe(customer, quotas={"seo": 5})
    url = USAGE.replace("{user_id}", str(customer.pk))
    api.post(url, {"primitive": "seo", "idempotencyKey": "k"}, format="json")

    response = api.post(url, {"primitive": "seo", "quantity": 2, "idempotencyKey": "k"}, "json")

    assert response.status_code == 409
    assert_documented(document, USAGE, "post", response)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {"key": "pro", "name": "Pro", "quotas": {"seo": "many"}},
        {"key": "pro", "name": "Pro", "quotas": {"Not A Slug": 1}},
        {"key": "pro", "name": "Pro", "perSeat": ["seo", 7, None]},
        {"key": "pro"},
        [1, 2],
    ],
    ids=["nested-value", "bad-key", "list-items", "missing", "not-an-object"],
)
def test_field_errors_are_documented(document, api, body):
    response = api.post("/v1/plans", body, format="json")

    assert response.status_code == 400
    assert_documented(document, "/v1/plans", "post", response)


@pytest.mark.django_db
def test_a_body_that_is_not_json_is_documented(document, api):
    response = api.post("/v1/plans", "{", content_type="application/json")
    unsupported = api.post("/v1/plans", "key=pro", content_type="text/plain")

    assert (response.status_code, unsupported.status_code) == (400, 415)
    assert_documented(document, "/v1/plans", "post", response)
    assert_documented(document, "/v1/plans", "post", unsupported)


@pytest.mark.django_db
def test_missing_credentials_and_a_tenant_token_on_v1_are_documented(
    document, anonymous, customer_client
):
    unauthenticated = anonymous.get("/v1/plans")
    forbidden = customer_client.get("/v1/plans")

    assert unauthenticated.status_code == 401
    assert unauthenticated["WWW-Authenticate"]
    assert forbidden.status_code == 403
    assert_documented(document, "/v1/plans", "get", unauthenticated)
    assert_documented(document, "/v1/plans", "get", forbidden)


@pytest.mark.django_db
def test_an_operator_key_naming_no_customer_on_billing_is_documented(document, api, customer):
    unnamed = api.get("/billing/usage")
    unknown = api.get("/billing/usage", headers={"X-Billing-Customer": "999999999"})

    assert (unnamed.status_code, unknown.status_code) == (401, 404)
    assert_documented(document, "/billing/usage", "get", unnamed)
    assert_documented(document, "/billing/usage", "get", unknown)


@pytest.mark.django_db
def test_a_stripe_failure_is_documented(document, customer_client, stripe_stub):
    PlanFactory(key="pro", stripe_price_id="price_pro")
    refuse(stripe_stub, "POST", "/v1/checkout/sessions", "internal error")
    checkout = {
        "priceId": "price_pro",
        "successUrl": "https://testserver/ok",
        "cancelUrl": "https://testserver/",
    }

    response = customer_client.post("/billing/checkout", checkout, format="json")

    assert response.status_code == 502
    assert_documented(document, "/billing/checkout", "post", response)
