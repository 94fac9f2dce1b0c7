"""Seats (issue 10): a subscription's seat count, set with the subscription, and who holds
them, managed with Salable's operations (``PUT /v1/subscriptions/<id>/seats``), all or
nothing. A per-seat quota gives the customer limit x seats, shown and enforced alike."""

from __future__ import annotations

import uuid

import pytest

from billing_app.catalog.services import plan_upsert
from billing_app.models import Seat, Subscription

from ..factories import UserFactory
from ..utils import assert_field_error, holders, json_id

pytestmark = pytest.mark.django_db


def subscription_url(customer) -> str:
    return f"/v1/users/{customer.pk}/billing/subscription"


def seats_url(subscription_id) -> str:
    return f"/v1/subscriptions/{subscription_id}/seats"


@pytest.fixture
def team(db):
    plan_upsert(key="team", name="Team", quotas={"seo": 10, "aeo": 4}, per_seat=["seo"])


@pytest.fixture
def subscription_id(api, customer, team) -> int:
    response = api.put(subscription_url(customer), {"planKey": "team", "seats": 2}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["id"]


@pytest.fixture
def ada(db):
    return UserFactory()


@pytest.fixture
def bob(db):
    return UserFactory()


def test_the_subscription_answers_its_id_and_seat_count(api, customer, subscription_id):
    body = api.get(subscription_url(customer)).json()
    assert body["id"] == subscription_id == Subscription.objects.get(customer=customer).pk
    assert body["seats"] == 2

    response = api.put(subscription_url(customer), {"planKey": "team", "seats": 5}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["seats"] == 5
    assert response.json()["id"] == subscription_id
    assert api.get(seats_url(subscription_id)).json()["seats"] == 5


def test_seats_answer_the_count_and_the_grantees(api, subscription_id):
    assert api.get(seats_url(subscription_id)).json() == {
        "subscriptionId": subscription_id,
        "seats": 2,
        "grantees": [],
    }


def test_add_replace_and_remove(api, subscription_id, ada, bob):
    cy = UserFactory()

    response = api.put(
        seats_url(subscription_id),
        [{"type": "add", "granteeId": json_id(ada.pk)}, {"type": "add", "granteeId": str(bob.pk)}],
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["subscriptionId"] == subscription_id
    assert [g["granteeId"] for g in response.json()["grantees"]] == [
        json_id(ada.pk),
        json_id(bob.pk),
    ]
    assert api.get(seats_url(subscription_id)).json() == response.json()

    response = api.put(
        seats_url(subscription_id),
        [{"type": "replace", "granteeId": str(ada.pk), "newGranteeId": json_id(cy.pk)}],
        format="json",
    )
    assert response.status_code == 200, response.content
    assert holders(subscription_id) == {bob.pk, cy.pk}

    # The ids answered are taken back as they are.
    answered = response.json()["grantees"][0]["granteeId"]
    response = api.put(
        seats_url(subscription_id), [{"type": "remove", "granteeId": answered}], format="json"
    )
    assert response.status_code == 200, response.content
    assert len(holders(subscription_id)) == 1


@pytest.mark.parametrize(
    "operations",
    [
        pytest.param(["add ada", "add bob", "add cy"], id="past-the-count"),
        pytest.param(["add bob", "add bob"], id="the-same-grantee-twice"),
        pytest.param(["remove bob"], id="remove-a-non-holder"),
        pytest.param(["add bob", "replace cy ada"], id="replace-a-non-holder"),
        pytest.param(["add bob", "replace ada bob"], id="replace-by-a-holder"),
    ],
)
def test_a_list_that_cannot_apply_whole_is_409_and_changes_nothing(
    api, subscription_id, ada, bob, operations
):
    users = {"ada": ada, "bob": bob, "cy": UserFactory()}
    assert (
        api.put(
            seats_url(subscription_id), [{"type": "add", "granteeId": str(ada.pk)}], format="json"
        ).status_code
        == 200
    )
    before = holders(subscription_id)
    body = []
    for operation in operations:
        kind, *names = operation.split()
        ids = [str(users[name].pk) for name in names]
        body.append({"type": kind} | dict(zip(["granteeId", "newGranteeId"], ids, strict=False)))

    response = api.put(seats_url(subscription_id), body, format="json")

    assert response.status_code == 409, response.content
    assert "detail" in response.json()
    assert holders(subscription_id) == before


@pytest.mark.parametrize("remove_first", [True, False])
def test_the_count_binds_the_outcome_not_each_step(api, subscription_id, ada, bob, remove_first):
    cy = UserFactory()
    api.put(
        seats_url(subscription_id),
        [{"type": "add", "granteeId": str(ada.pk)}, {"type": "add", "granteeId": str(bob.pk)}],
        format="json",
    )
    operations = [
        {"type": "remove", "granteeId": str(ada.pk)},
        {"type": "add", "granteeId": str(cy.pk)},
    ]

    response = api.put(
        seats_url(subscription_id),
        operations if remove_first else operations[::-1],
        format="json",
    )

    assert response.status_code == 200, response.content
    assert holders(subscription_id) == {bob.pk, cy.pk}


@pytest.mark.parametrize(
    ("operation", "field"),
    [
        ({"type": "add", "granteeId": "nobody"}, "operations.1.granteeId"),
        ({"type": "add", "granteeId": "999999"}, "operations.1.granteeId"),
        ({"type": "add", "granteeId": str(uuid.UUID(int=7))}, "operations.1.granteeId"),
        ({"type": "add", "granteeId": str(2**128)}, "operations.1.granteeId"),
        ({"type": "remove", "granteeId": "nobody"}, "operations.1.granteeId"),
        (
            {"type": "replace", "granteeId": "ADA", "newGranteeId": "nobody"},
            "operations.1.newGranteeId",
        ),
        ({"type": "add", "granteeId": "INACTIVE"}, "operations.1.granteeId"),
    ],
)
def test_an_unknown_grantee_is_400_naming_the_operation_field(
    api, subscription_id, ada, bob, operation, field
):
    names = {"ADA": str(ada.pk), "INACTIVE": str(UserFactory(is_active=False).pk)}
    operation = {key: names.get(value, value) for key, value in operation.items()}

    response = api.put(
        seats_url(subscription_id),
        [{"type": "add", "granteeId": str(bob.pk)}, operation],
        format="json",
    )

    assert_field_error(response, field)
    assert holders(subscription_id) == set()


@pytest.mark.parametrize(
    ("operation", "field"),
    [
        ({"type": "swap", "granteeId": "1"}, "operations.1.type"),
        ({"granteeId": "1"}, "operations.1.type"),
        ({"type": "add"}, "operations.1.granteeId"),
        ({"type": "add", "granteeId": None}, "operations.1.granteeId"),
        ({"type": "add", "granteeId": "g" * 256}, "operations.1.granteeId"),
        ({"type": "replace", "granteeId": "1"}, "operations.1.newGranteeId"),
        ("add 1", "operations.1.nonFieldErrors"),
        (None, "operations.1"),
    ],
)
def test_a_malformed_operation_is_400_naming_its_field(api, subscription_id, bob, operation, field):
    response = api.put(
        seats_url(subscription_id),
        [{"type": "add", "granteeId": str(bob.pk)}, operation],
        format="json",
    )

    assert_field_error(response, field)
    assert holders(subscription_id) == set()


@pytest.mark.parametrize(
    "body",
    [
        {"type": "add", "granteeId": "1"},
        "add",
        None,
        [],
        [{"type": "add", "granteeId": "1"}] * 101,
    ],
    ids=["an-object", "text", "null", "empty", "too-many"],
)
def test_a_body_that_is_not_a_list_of_operations_is_400(api, subscription_id, body):
    response = api.put(seats_url(subscription_id), body, format="json")
    assert response.status_code == 400, response.content
    assert holders(subscription_id) == set()


@pytest.mark.parametrize("method", ["get", "put"])
@pytest.mark.parametrize("subscription", ["999999", "abc", str(2**70), "-1"])
def test_seats_of_an_unknown_subscription_answer_404(api, subscription_id, method, subscription):
    response = getattr(api, method)(
        seats_url(subscription), [{"type": "add", "granteeId": "1"}], format="json"
    )
    assert response.status_code == 404, response.content
    assert not Seat.objects.exists()


def test_seats_of_an_ended_subscription_answer_409(api, customer, subscription_id, ada):
    api.put(subscription_url(customer), {"planKey": "team", "status": "canceled"}, format="json")

    response = api.put(
        seats_url(subscription_id), [{"type": "add", "granteeId": str(ada.pk)}], format="json"
    )

    assert response.status_code == 409, response.content
    assert not Seat.objects.exists()


# A per-seat quota: limit x seats, in the usage endpoint and in enforcement


def usage(api, customer, **body):
    return api.post(f"/v1/users/{customer.pk}/billing/usage", body, format="json")


def test_a_per_seat_quota_is_the_limit_times_the_seats(api, customer, subscription_id):
    shown = api.get(f"/v1/users/{customer.pk}/billing/usage").json()
    assert shown["quotas"] == {"seo": 20, "aeo": 4}  # seo per seat (10 x 2), aeo not

    assert usage(api, customer, primitive="seo", quantity=20).status_code == 201
    refused = usage(api, customer, primitive="seo")
    assert refused.status_code == 429, refused.content
    assert refused.json()["usage"] == {"current": 20, "limit": 20}
    check = api.get(f"/v1/users/{customer.pk}/billing/check", {"primitive": "seo"}).json()
    assert (check["allowed"], check["limit"], check["remaining"]) == (False, 20, 0)

    # A third seat binds at once: ten more.
    api.put(subscription_url(customer), {"planKey": "team", "seats": 3}, format="json")
    shown = api.get(f"/v1/users/{customer.pk}/billing/usage").json()
    assert (shown["quotas"]["seo"], shown["usage"]["seo"]) == (30, 20)
    assert usage(api, customer, primitive="seo", quantity=10).status_code == 201
    assert usage(api, customer, primitive="seo").status_code == 429
    # The quota that is not per seat did not grow.
    assert usage(api, customer, primitive="aeo", quantity=5).status_code == 429
