"""The Stripe stand-in answers as Stripe does where our tests depend on it."""

import pytest
import stripe

KEY = "sk_test_" + "a" * 30


def test_idempotency_key_replays_the_first_answer(stripe_stub):
    first = stripe.Customer.create(email="a@example.com", idempotency_key="k1", api_key=KEY)
    again = stripe.Customer.create(email="a@example.com", idempotency_key="k1", api_key=KEY)

    assert again.id == first.id
    assert len([o for o in stripe_stub.objects.values() if o["object"] == "customer"]) == 1


def test_idempotency_key_with_other_parameters_is_refused(stripe_stub):
    stripe.Customer.create(email="a@example.com", idempotency_key="k2", api_key=KEY)

    with pytest.raises(stripe.IdempotencyError):
        stripe.Customer.create(email="b@example.com", idempotency_key="k2", api_key=KEY)


def test_unknown_objects_are_404_as_stripe_says(stripe_stub):
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe.Subscription.retrieve("sub_missing", api_key=KEY)
    assert error.value.code == "resource_missing"


def test_requests_are_recorded_with_decoded_parameters(stripe_stub):
    stripe.checkout.Session.create(
        mode="subscription",
        line_items=[{"price": "price_x", "quantity": 2}],
        metadata={"a": "b"},
        api_key=KEY,
    )
    (request,) = stripe_stub.calls("POST", "/v1/checkout/sessions")
    assert request.params == {
        "mode": "subscription",
        "line_items": [{"price": "price_x", "quantity": "2"}],
        "metadata": {"a": "b"},
    }
