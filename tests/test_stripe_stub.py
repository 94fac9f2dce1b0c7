"""The Stripe stand-in answers as Stripe does, and no kinder, where our tests depend on it."""

import http.client
import json
import time
from urllib.parse import urlencode, urlsplit

import pytest
import stripe

from .stripe_shapes import FIXTURES, shape_differences

KEY = "sk_test_" + "a" * 30


def raw(method, path, params=None, headers=None):
    """A request to the stand-in as bytes on the wire: status, headers, JSON body."""
    url = urlsplit(stripe.api_base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    body = urlencode(params or {})
    sent = {"Authorization": f"Bearer {KEY}", **(headers or {})}
    if method == "GET":
        path, body = f"{path}?{body}" if body else path, None
    else:
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    connection.request(method, path, body=body, headers=sent)
    response = connection.getresponse()
    answer = response.status, dict(response.getheaders()), json.loads(response.read())
    connection.close()
    return answer


def refusal(call, *args, **kwargs):
    """The error Stripe's answer raised, as stripe-python raises it."""
    with pytest.raises(stripe.StripeError) as raised:
        call(*args, api_key=KEY, **kwargs)
    return raised.value


# --- idempotency ---------------------------------------------------------------------


def test_idempotency_key_replays_the_first_answer(stripe_stub):
    first = stripe.Customer.create(email="a@example.com", idempotency_key="k1", api_key=KEY)
    again = stripe.Customer.create(email="a@example.com", idempotency_key="k1", api_key=KEY)

    assert again.id == first.id
    assert len([o for o in stripe_stub.objects.values() if o["object"] == "customer"]) == 1


def test_a_replay_says_so_in_its_headers(stripe_stub):
    params, key = {"email": "a@example.com"}, {"Idempotency-Key": "k-headers"}
    status, first, _ = raw("POST", "/v1/customers", params, key)
    status, again, body = raw("POST", "/v1/customers", params, key)

    assert status == 200 and body["email"] == "a@example.com"
    assert "Idempotent-Replayed" not in first
    assert again["Idempotent-Replayed"] == "true"
    assert again["Original-Request"] == first["Request-Id"]


def test_idempotency_key_with_other_parameters_is_refused(stripe_stub):
    stripe.Customer.create(email="a@example.com", idempotency_key="k2", api_key=KEY)

    error = refusal(stripe.Customer.create, email="b@example.com", idempotency_key="k2")
    assert isinstance(error, stripe.IdempotencyError)


def test_a_request_refused_for_its_parameters_keeps_no_idempotent_answer(stripe_stub):
    # Stripe saves a result only once an endpoint began executing.
    status, _, _ = raw("POST", "/v1/customers", {"emial": "a@x.com"}, {"Idempotency-Key": "k3"})
    assert status == 400

    status, _, body = raw("POST", "/v1/customers", {"email": "a@x.com"}, {"Idempotency-Key": "k3"})
    assert status == 200 and body["object"] == "customer"


# --- errors --------------------------------------------------------------------------


def test_unknown_objects_are_404_as_stripe_says(stripe_stub):
    error = refusal(stripe.Subscription.retrieve, "sub_missing")

    assert isinstance(error, stripe.InvalidRequestError)
    assert error.http_status == 404
    assert error.code == "resource_missing" and error.param == "id"
    assert error.user_message == "No such subscription: 'sub_missing'"


def test_an_error_has_stripes_error_object(stripe_stub):
    status, headers, body = raw("POST", "/v1/customers", {"colour": "blue"})

    assert status == 400
    assert body == {
        "error": {
            "code": "parameter_unknown",
            "doc_url": "https://docs.stripe.com/error-codes/parameter-unknown",
            "message": "Received unknown parameter: colour",
            "param": "colour",
            "request_log_url": f"https://dashboard.stripe.com/test/logs/{headers['Request-Id']}",
            "type": "invalid_request_error",
        }
    }


def test_unknown_parameters_are_refused_at_any_depth(stripe_stub):
    customer = stripe_stub.customer()
    sub = stripe_stub.subscription(customer=customer["id"], price="price_a")
    item = sub["items"]["data"][0]["id"]

    top = refusal(stripe.Subscription.modify, sub["id"], prorate=True)
    deep = refusal(stripe.Subscription.modify, sub["id"], items=[{"id": item, "colour": "x"}])

    assert (top.code, top.param) == ("parameter_unknown", "prorate")
    assert (deep.code, deep.param) == ("parameter_unknown", "items[0][colour]")
    assert deep.user_message == "Received unknown parameter: items[0][colour]"
    assert stripe_stub.objects[sub["id"]]["items"]["data"][0]["price"]["id"] == "price_a"


def test_missing_required_parameters_are_refused(stripe_stub):
    error = refusal(stripe.billing.MeterEvent.create, event_name="calls")

    assert (error.code, error.param) == ("parameter_missing", "payload")
    assert error.user_message == "Missing required param: payload."


def test_values_of_the_wrong_type_are_refused(stripe_stub):
    customer = stripe_stub.customer()
    sub = stripe_stub.subscription(customer=customer["id"], price="price_a")
    item = sub["items"]["data"][0]["id"]

    quantity = refusal(
        stripe.Subscription.modify, sub["id"], items=[{"id": item, "quantity": "2.5"}]
    )
    boolean = refusal(stripe.Subscription.modify, sub["id"], cancel_at_period_end="soon")
    choice = refusal(stripe.Subscription.list, status="alive")
    empty = refusal(stripe.Subscription.modify, sub["id"], cancel_at_period_end="")

    assert (quantity.code, quantity.param) == ("parameter_invalid_integer", "items[0][quantity]")
    assert boolean.param == "cancel_at_period_end" and "Invalid boolean" in boolean.user_message
    assert choice.param == "status" and choice.user_message.startswith("Invalid status: must be")
    assert (empty.code, empty.param) == ("parameter_invalid_empty", "cancel_at_period_end")


def test_an_unknown_id_in_a_parameter_is_400_naming_it(stripe_stub):
    error = refusal(stripe.InvoiceItem.create, customer="cus_nobody", amount=100, currency="usd")

    assert error.http_status == 400
    assert (error.code, error.param) == ("resource_missing", "customer")


def test_no_api_key_is_401(stripe_stub):
    status, _, body = raw("GET", "/v1/account", headers={"Authorization": ""})
    assert status == 401 and body["error"]["type"] == "invalid_request_error"


def test_a_request_can_break_as_a_network_or_proxy_breaks(stripe_stub):
    customer = stripe_stub.customer()
    stripe_stub.fail("GET", f"/v1/customers/{customer['id']}", "disconnect")
    stripe_stub.fail("GET", f"/v1/customers/{customer['id']}", "html")

    assert isinstance(refusal(stripe.Customer.retrieve, customer["id"]), stripe.APIConnectionError)
    assert type(refusal(stripe.Customer.retrieve, customer["id"])) is stripe.APIError
    assert stripe.Customer.retrieve(customer["id"], api_key=KEY).id == customer["id"]


def test_what_the_stand_in_does_not_model_is_a_500_not_a_guess(stripe_stub):
    error = refusal(stripe.Customer.create, address={"city": "Paris"})
    assert error.http_status == 500 and "does not model" in error.user_message


def test_requests_are_recorded_with_decoded_parameters(stripe_stub):
    stripe_stub.price("price_x")
    stripe.checkout.Session.create(
        mode="subscription",
        line_items=[{"price": "price_x", "quantity": 2}],
        success_url="https://example.com/ok",
        metadata={"a": "b"},
        api_key=KEY,
    )
    (request,) = stripe_stub.calls("POST", "/v1/checkout/sessions")
    assert request.params == {
        "mode": "subscription",
        "line_items": [{"price": "price_x", "quantity": "2"}],
        "success_url": "https://example.com/ok",
        "metadata": {"a": "b"},
    }


# --- shapes --------------------------------------------------------------------------


def test_a_meter_event_has_no_id(stripe_stub):
    answer = stripe.billing.MeterEvent.create(
        event_name="calls",
        payload={"stripe_customer_id": "cus_1", "value": "3"},
        identifier="run-1",
        api_key=KEY,
    )

    assert "id" not in answer
    with pytest.raises(KeyError):
        answer["id"]  # what the outbox reads of every answer
    assert set(answer.to_dict()) == set(FIXTURES["billing.meter_event"])
    assert (answer["identifier"], answer["payload"]["value"]) == ("run-1", "3")


def test_a_meter_event_must_be_recent_and_unique(stripe_stub):
    payload = {"stripe_customer_id": "cus_1", "value": "1"}
    old = refusal(
        stripe.billing.MeterEvent.create,
        event_name="calls",
        payload=payload,
        timestamp=int(time.time()) - 36 * 86400,
    )
    stripe.billing.MeterEvent.create(
        event_name="calls", payload=payload, identifier="once", api_key=KEY
    )
    twice = refusal(
        stripe.billing.MeterEvent.create, event_name="calls", payload=payload, identifier="once"
    )

    assert old.param == "timestamp" and twice.param == "identifier"


def served_objects(stub):
    """One answer of each type the stand-in serves, fetched through the API."""
    customer = stripe.Customer.create(email="a@example.com", api_key=KEY)
    stub.price("price_one_time", type="one_time", recurring=None)
    sub = stub.subscription(customer=customer.id, price="price_a", prices=["price_b"])
    product = sub["items"]["data"][0]["price"]["product"]
    stub.product_feature(product, "seo")
    invoice = stub.make(
        "invoice",
        customer=customer.id,
        parent={
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": sub["id"]},
        },
        lines={"object": "list", "data": [], "has_more": False, "url": "/v1/invoices/x/lines"},
    )
    checkout = stripe.checkout.Session.create(
        mode="subscription",
        customer=customer.id,
        line_items=[{"price": "price_a", "quantity": 1}],
        success_url="https://example.com/ok",
        api_key=KEY,
    )
    return {
        "account": stripe.Account.retrieve(api_key=KEY),
        "customer": stripe.Customer.retrieve(customer.id, api_key=KEY),
        "subscription": stripe.Subscription.retrieve(sub["id"], api_key=KEY),
        "subscription_item": stripe.SubscriptionItem.retrieve(
            sub["items"]["data"][1]["id"], api_key=KEY
        ),
        "price": stripe.Price.retrieve("price_a", api_key=KEY),
        "product": stripe.Product.retrieve(product, api_key=KEY),
        "product_feature": stripe.Product.list_features(product, api_key=KEY).data[0],
        "invoice": stripe.Invoice.retrieve(invoice["id"], api_key=KEY),
        "invoiceitem": stripe.InvoiceItem.create(
            customer=customer.id,
            currency="usd",
            quantity=3,
            unit_amount_decimal="0.5",
            period={"start": 1, "end": 2},
            api_key=KEY,
        ),
        "checkout.session": stripe.checkout.Session.retrieve(checkout.id, api_key=KEY),
        "checkout.session (payment)": stripe.checkout.Session.create(
            mode="payment",
            line_items=[{"price": "price_one_time", "quantity": 1}],
            success_url="https://example.com/ok",
            api_key=KEY,
        ),
        "billing_portal.session": stripe.billing_portal.Session.create(
            customer=customer.id, return_url="https://example.com/", api_key=KEY
        ),
        "billing.meter_event": stripe.billing.MeterEvent.create(
            event_name="calls",
            payload={"stripe_customer_id": customer.id, "value": "1"},
            api_key=KEY,
        ),
        "event": stub.event("customer.subscription.created", sub),
    }


def test_every_type_served_has_exactly_stripes_keys(stripe_stub):
    answers = served_objects(stripe_stub)

    assert {kind.split(" ")[0] for kind in answers} >= {
        "account",
        "billing.meter_event",
        "billing_portal.session",
        "checkout.session",
        "customer",
        "invoice",
        "invoiceitem",
        "price",
        "product",
        "product_feature",
        "subscription",
        "subscription_item",
    }
    for kind, answer in answers.items():
        data = answer.to_dict() if hasattr(answer, "to_dict") else answer
        assert shape_differences(data, kind.split(" ")[0]) == [], kind


def test_a_list_has_exactly_stripes_keys(stripe_stub):
    customer = stripe_stub.customer()
    stripe_stub.subscription(customer=customer["id"], price="price_a")

    _, _, body = raw("GET", "/v1/subscriptions", {"customer": customer["id"]})

    assert set(body) == {"object", "data", "has_more", "url"}
    assert body["url"] == "/v1/subscriptions"
    assert shape_differences(body["data"][0], "subscription") == []


def test_an_invoice_links_its_subscription_only_under_parent(stripe_stub):
    customer = stripe_stub.customer()
    sub = stripe_stub.subscription(customer=customer["id"], price="price_a")
    parent = {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {"metadata": {}, "subscription": sub["id"]},
    }
    mine = stripe_stub.make("invoice", customer=customer["id"], parent=parent)
    stripe_stub.make("invoice", customer=customer["id"])

    found = stripe.Invoice.list(subscription=sub["id"], api_key=KEY)

    assert [i.id for i in found.data] == [mine["id"]]
    assert found.data[0]["subscription"] is None  # the example's field, never filled


def test_made_objects_take_only_stripes_keys(stripe_stub):
    with pytest.raises(TypeError, match="current_period_end"):
        stripe_stub.make("subscription", current_period_end=1)
    customer = stripe_stub.customer()
    with pytest.raises(TypeError, match="sources"):
        stripe_stub.update(customer["id"], sources=[])


# --- expand --------------------------------------------------------------------------


def test_fields_stripe_includes_on_request_appear_only_when_expanded(stripe_stub):
    customer = stripe_stub.customer()

    plain = stripe.Customer.retrieve(customer["id"], api_key=KEY)
    expanded = stripe.Customer.retrieve(customer["id"], expand=["sources"], api_key=KEY)

    assert "sources" not in plain
    assert expanded["sources"]["data"] == [] and expanded["sources"]["object"] == "list"


def test_expand_replaces_an_id_with_its_object(stripe_stub):
    customer = stripe_stub.customer(email="c@example.com")
    sub = stripe_stub.subscription(customer=customer["id"], price="price_a")

    answer = stripe.Subscription.retrieve(sub["id"], expand=["customer"], api_key=KEY)
    listed = stripe.Subscription.list(expand=["data.customer"], api_key=KEY)

    assert answer["customer"]["email"] == "c@example.com"
    assert listed.data[0]["customer"]["id"] == customer["id"]
    assert stripe_stub.objects[sub["id"]]["customer"] == customer["id"]  # stored unexpanded


def test_what_cannot_be_expanded_is_refused(stripe_stub):
    customer = stripe_stub.customer()
    stripe_stub.subscription(customer=customer["id"], price="price_a")

    field = refusal(stripe.Customer.retrieve, customer["id"], expand=["metadata"])
    unknown = refusal(stripe.Customer.retrieve, customer["id"], expand=["nothing"])
    on_a_list = refusal(stripe.Subscription.list, expand=["customer"])

    assert field.user_message == "This property cannot be expanded (metadata)."
    assert "expanding 'data.customer'" in on_a_list.user_message
    assert unknown.http_status == 400


# --- lists ---------------------------------------------------------------------------


def test_lists_page_as_stripes_do(stripe_stub):
    customer = stripe_stub.customer()
    made = [
        stripe_stub.subscription(customer=customer["id"], price="price_a")["id"] for _ in range(25)
    ]

    first = stripe.Subscription.list(customer=customer["id"], api_key=KEY)
    assert len(first.data) == 10 and first.has_more is True  # the default limit
    assert [s.id for s in first.data] == made[::-1][:10]  # newest first
    every = [s.id for s in first.auto_paging_iter()]
    assert every == made[::-1]
    last = stripe.Subscription.list(limit=5, starting_after=made[5], api_key=KEY)
    assert [s.id for s in last.data] == made[4::-1] and last.has_more is False
    before = stripe.Subscription.list(limit=3, ending_before=made[0], api_key=KEY)
    assert [s.id for s in before.data] == made[3:0:-1] and before.has_more is True
    assert len(stripe.Subscription.list(limit=100, api_key=KEY).data) == 25


def test_list_limits_and_cursors_are_checked(stripe_stub):
    too_many = refusal(stripe.Subscription.list, limit=101)
    none = refusal(stripe.Subscription.list, limit=0)
    cursor = refusal(stripe.Subscription.list, starting_after="sub_nowhere")

    assert too_many.param == "limit" and none.param == "limit"
    assert (cursor.code, cursor.param) == ("resource_missing", "starting_after")


def test_subscription_list_leaves_out_canceled_unless_asked(stripe_stub):
    customer = stripe_stub.customer()
    live = stripe_stub.subscription(customer=customer["id"], price="price_a")
    ended = stripe_stub.subscription(customer=customer["id"], price="price_a", status="canceled")

    default = stripe.Subscription.list(customer=customer["id"], api_key=KEY)
    every = stripe.Subscription.list(customer=customer["id"], status="all", api_key=KEY)

    assert [s.id for s in default.data] == [live["id"]]
    assert {s.id for s in every.data} == {live["id"], ended["id"]}


def test_product_features_are_a_list(stripe_stub):
    price = stripe_stub.price("price_a")
    stripe_stub.product_feature(price["product"], "seo")

    features = stripe.Product.list_features(price["product"], api_key=KEY)

    assert features.object == "list"
    assert [f.entitlement_feature.lookup_key for f in features.data] == ["seo"]
    assert refusal(stripe.Product.list_features, "prod_nowhere").http_status == 404


# --- subscriptions -------------------------------------------------------------------


def test_modify_changes_the_items_price_and_quantity_in_place(stripe_stub):
    customer = stripe_stub.customer()
    sub = stripe_stub.subscription(customer=customer["id"], price="price_a")
    item = sub["items"]["data"][0]
    stripe_stub.price("price_b", unit_amount=5000)

    answer = stripe.Subscription.modify(
        sub["id"],
        items=[{"id": item["id"], "price": "price_b", "quantity": 3}],
        proration_behavior="none",
        api_key=KEY,
    )

    (changed,) = answer["items"]["data"]
    assert changed["id"] == item["id"]
    assert changed["price"]["id"] == changed["plan"]["id"] == "price_b"
    assert changed["quantity"] == 3
    assert changed["current_period_end"] == item["current_period_end"]


def test_modify_refuses_an_item_or_price_that_is_not_there(stripe_stub):
    customer = stripe_stub.customer()
    sub = stripe_stub.subscription(customer=customer["id"], price="price_a")
    item = sub["items"]["data"][0]["id"]

    foreign = refusal(stripe.Subscription.modify, sub["id"], items=[{"id": "si_other"}])
    price = refusal(
        stripe.Subscription.modify, sub["id"], items=[{"id": item, "price": "price_nowhere"}]
    )

    assert (foreign.code, foreign.param) == ("resource_missing", "items[0][id]")
    assert (price.code, price.param) == ("resource_missing", "items[0][price]")


def test_cancel_at_period_end_metadata_and_cancel_now(stripe_stub):
    customer = stripe_stub.customer()
    sub = stripe_stub.subscription(customer=customer["id"], price="price_a", metadata={"a": "1"})
    end = sub["items"]["data"][0]["current_period_end"]

    at_end = stripe.Subscription.modify(
        sub["id"], cancel_at_period_end=True, metadata={"a": "", "b": "2"}, api_key=KEY
    )
    assert (at_end.cancel_at_period_end, at_end.cancel_at) == (True, end)
    assert at_end.metadata.to_dict() == {"b": "2"}

    now = stripe.Subscription.cancel(sub["id"], api_key=KEY)
    assert now.status == "canceled" and now.canceled_at and now.ended_at
    error = refusal(stripe.Subscription.modify, sub["id"], cancel_at_period_end=False)
    assert error.http_status == 400


def test_trialing_subscription_with_several_items_and_an_anchor(stripe_stub):
    customer = stripe_stub.customer()
    start, trial_end = 1_800_000_000, 1_800_000_000 + 14 * 86400

    sub = stripe_stub.subscription(
        customer=customer["id"],
        price="price_a",
        prices=["price_b"],
        quantity=4,
        status="trialing",
        start=start,
        trial_end=trial_end,
        billing_cycle_anchor=trial_end,
    )

    answer = stripe.Subscription.retrieve(sub["id"], api_key=KEY)
    assert (answer.status, answer.trial_start, answer.trial_end) == ("trialing", start, trial_end)
    assert answer.billing_cycle_anchor == trial_end
    assert [(i.price.id, i.quantity) for i in answer["items"].data] == [
        ("price_a", 4),
        ("price_b", 1),
    ]
    assert {i.current_period_end for i in answer["items"].data} == {trial_end}


# --- checkout, portal, invoice items ---------------------------------------------------


def test_checkout_in_subscription_mode_needs_success_url_and_priced_lines(stripe_stub):
    stripe_stub.price("price_a")
    lines = [{"price": "price_a", "quantity": 1}]

    no_url = refusal(stripe.checkout.Session.create, mode="subscription", line_items=lines)
    no_lines = refusal(
        stripe.checkout.Session.create, mode="subscription", success_url="https://e.com/"
    )
    no_quantity = refusal(
        stripe.checkout.Session.create,
        mode="subscription",
        success_url="https://e.com/",
        line_items=[{"price": "price_a"}],
    )
    unknown = refusal(
        stripe.checkout.Session.create,
        mode="subscription",
        success_url="https://e.com/",
        line_items=[{"price": "price_nowhere", "quantity": 1}],
    )

    assert (no_url.code, no_url.param) == ("parameter_missing", "success_url")
    assert no_lines.param == "line_items"
    assert (no_quantity.code, no_quantity.param) == ("parameter_missing", "line_items[0][quantity]")
    assert (unknown.code, unknown.param) == ("resource_missing", "line_items[0][price]")


def test_checkout_answers_a_url_and_shows_its_lines_when_asked(stripe_stub):
    stripe_stub.price("price_a", unit_amount=4900)
    session = stripe.checkout.Session.create(
        mode="subscription",
        line_items=[{"price": "price_a", "quantity": 2}],
        success_url="https://e.com/ok",
        api_key=KEY,
    )

    assert session.url.startswith("https://checkout.stripe.com/")
    assert session.amount_total == 9800 and session.status == "open"
    assert "line_items" not in session
    again = stripe.checkout.Session.retrieve(session.id, expand=["line_items"], api_key=KEY)
    assert [(i.price.id, i.quantity) for i in again.line_items.data] == [("price_a", 2)]


def test_checkout_in_payment_mode_refuses_a_recurring_price(stripe_stub):
    stripe_stub.price("price_a")
    error = refusal(
        stripe.checkout.Session.create,
        mode="payment",
        success_url="https://e.com/",
        line_items=[{"price": "price_a", "quantity": 1}],
    )
    assert error.param == "line_items[0][price]"


def test_portal_session_needs_a_customer_that_exists(stripe_stub):
    error = refusal(stripe.billing_portal.Session.create, customer="cus_nowhere")
    assert (error.code, error.param) == ("resource_missing", "customer")


def test_invoice_item_amount_from_quantity_and_decimal_unit_amount(stripe_stub):
    customer = stripe_stub.customer()
    item = stripe.InvoiceItem.create(
        customer=customer["id"],
        currency="usd",
        quantity=4,
        unit_amount_decimal="0.5",
        api_key=KEY,
    )
    assert (item.amount, item.quantity, str(item.pricing.unit_amount_decimal)) == (2, 4, "0.5")
    assert "unit_amount_decimal" not in item  # under pricing in the current API


def test_an_unknown_url_is_404_and_deep_expansion_is_refused(stripe_stub):
    status, _, body = raw("GET", "/v1/subscriptionz")
    assert status == 404 and "Unrecognized request URL" in body["error"]["message"]

    customer = stripe_stub.customer()
    deep = refusal(stripe.Customer.retrieve, customer["id"], expand=["a.b.c.d.e"])
    assert deep.user_message == "You cannot expand more than 4 levels of a property."


def test_a_made_invoice_has_its_own_empty_lines(stripe_stub):
    customer = stripe_stub.customer()
    invoice = stripe_stub.make("invoice", customer=customer["id"])

    answer = stripe.Invoice.retrieve(invoice["id"], api_key=KEY)

    assert answer.lines.data == [] and answer.lines.url == f"/v1/invoices/{invoice['id']}/lines"
    assert shape_differences(answer.to_dict(), "invoice") == []
