"""The usage API: ``POST /v1/users/<id>/billing/usage`` (record, idempotent) and
``GET /v1/users/<id>/billing/check`` (may the customer use it now; consumes nothing)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from billing_app.catalog import services as catalog
from billing_app.customers import services as customers
from billing_app.models import IdempotencyKey, UsageCounter, UsageEvent
from billing_app.periods import window_for
from billing_app.testutils import subscribe

from ..factories import CustomerFactory
from ..utils import absent_customer_id, bearer, in_parallel, iso, use, window_now

pytestmark = pytest.mark.django_db


def usage_url(customer_id) -> str:
    return f"/v1/users/{customer_id}/billing/usage"


def check_url(customer_id) -> str:
    return f"/v1/users/{customer_id}/billing/check"


def record(api: APIClient, customer, *, headers=None, **body):
    body.setdefault("primitive", "seo")
    return api.post(usage_url(customer.pk), body, format="json", headers=headers)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def ledger(customer=None) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """Every counter, event and idempotency key (of ``customer``), to prove a request
    changed nothing."""
    counters = UsageCounter.objects.order_by("pk")
    events = UsageEvent.objects.order_by("pk")
    keys = IdempotencyKey.objects.order_by("pk")
    if customer is not None:
        counters = counters.filter(customer_id=customer.pk)
        events = events.filter(customer_id=customer.pk)
        keys = keys.filter(customer_id=customer.pk)
    return (
        list(counters.values_list("customer_id", "primitive", "window_start", "used")),
        list(events.values_list("pk", "primitive", "quantity", "idempotency_key")),
        list(keys.values_list("customer_id", "key", "fingerprint")),
    )


def counter(customer, window, primitive: str = "seo") -> int:
    row = UsageCounter.objects.filter(
        customer_id=customer.pk, primitive=primitive, window_start=window.start
    ).first()
    return row.used if row else 0


# POST /v1/users/<id>/billing/usage


def test_record_answers_201_with_the_event_and_the_window_usage(api, customer):
    subscription = subscribe(customer, quotas={"llm.tokens": 5000})
    window = window_now(customer)
    assert window.start == subscription.billing_cycle_anchor
    before = timezone.now()

    response = record(api, customer, primitive="llm.tokens", quantity=1200, idempotencyKey="k1")

    assert response.status_code == 201, response.content
    body = response.json()
    event = UsageEvent.objects.get()
    assert (event.customer_id, event.primitive, event.quantity, event.idempotency_key) == (
        customer.pk,
        "llm.tokens",
        1200,
        "k1",
    )
    assert body["event"] == {
        "id": event.pk,
        "primitive": "llm.tokens",
        "quantity": 1200,
        "timestamp": body["event"]["timestamp"],
        "idempotencyKey": "k1",
    }
    assert before <= parse_time(body["event"]["timestamp"]) <= timezone.now()
    assert body["usage"] == {
        "used": 1200,
        "limit": 5000,
        "remaining": 3800,
        "windowStart": iso(window.start),
        "windowEnd": iso(window.end),
    }
    assert body["duplicate"] is False
    assert counter(customer, window, "llm.tokens") == 1200


def test_quantity_defaults_to_one(api, customer):
    response = record(api, customer)

    assert response.status_code == 201
    assert response.json()["event"]["quantity"] == 1
    assert response.json()["usage"]["used"] == 1


def test_without_a_key_every_request_is_recorded(api, customer):
    assert [record(api, customer).status_code for _ in range(3)] == [201, 201, 201]
    assert UsageEvent.objects.count() == 3
    assert not IdempotencyKey.objects.exists()


# Idempotency keys: per customer, in the body or the Idempotency-Key header


def in_body(key):
    return {"idempotencyKey": key}


def in_header(key):
    return {"headers": {"Idempotency-Key": key}}


SENDS = [
    pytest.param(in_body, in_body, id="body-then-body"),
    pytest.param(in_header, in_header, id="header-then-header"),
    pytest.param(in_body, in_header, id="body-then-header"),
    pytest.param(in_header, in_body, id="header-then-body"),
]


@pytest.mark.parametrize(("first_send", "again_send"), SENDS)
def test_a_key_is_recorded_once_however_it_is_sent(api, customer, first_send, again_send):
    subscribe(customer, quotas={"seo": 10})
    first = record(api, customer, quantity=3, **first_send("k1"))
    assert first.status_code == 201, first.content

    again = record(api, customer, quantity=3, **again_send("k1"))

    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert {**again.json(), "duplicate": False} == first.json()
    assert first.json()["event"]["idempotencyKey"] == "k1"
    assert UsageEvent.objects.get().idempotency_key == "k1"
    assert IdempotencyKey.objects.get().key == "k1"
    assert counter(customer, window_now(customer)) == 3


def test_the_same_key_with_a_timestamp_replays_too(api, customer):
    timestamp = iso(timezone.now() - timedelta(hours=1))
    first = record(api, customer, idempotencyKey="k1", timestamp=timestamp)

    again = record(api, customer, idempotencyKey="k1", timestamp=timestamp)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["event"] == first.json()["event"]
    assert UsageEvent.objects.count() == 1


@pytest.mark.parametrize("send", [in_body, in_header], ids=["body", "header"])
@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(lambda: {"quantity": 4}, id="quantity"),
        pytest.param(lambda: {"primitive": "aeo"}, id="primitive"),
        pytest.param(lambda: {"timestamp": iso(timezone.now() - timedelta(hours=1))}, id="time"),
    ],
)
def test_the_same_key_with_a_different_body_is_a_conflict(api, customer, changed, send):
    assert record(api, customer, quantity=3, idempotencyKey="k1").status_code == 201
    before = ledger()

    response = record(api, customer, **{"quantity": 3, **changed()}, **send("k1"))

    assert response.status_code == 409
    assert "idempotencyKey" in response.json()
    assert ledger() == before


@pytest.mark.parametrize("send", [in_body, in_header], ids=["body", "header"])
@pytest.mark.parametrize(
    "key",
    [
        pytest.param("k" * 256, id="256-characters"),
        pytest.param("k" * 5000, id="5000-characters"),
        pytest.param("k\x00", id="nul"),
        pytest.param("\x00", id="only-nul"),
        pytest.param("a\x00" + "b" * 300, id="nul-and-too-long"),
    ],
)
def test_a_bad_key_is_a_400_naming_it_and_changes_nothing(api, customer, send, key):
    subscribe(customer, quotas={"seo": 10})
    assert record(api, customer, idempotencyKey="k").status_code == 201
    before = ledger()

    response = record(api, customer, **send(key))

    assert response.status_code == 400, response.content
    assert set(response.json()) == {"idempotencyKey"}
    assert ledger() == before


@pytest.mark.parametrize("send", [in_body, in_header], ids=["body", "header"])
def test_a_key_of_255_characters_is_taken(api, customer, send):
    key = "k" * 255

    assert record(api, customer, **send(key)).status_code == 201
    assert record(api, customer, **send(key)).status_code == 200
    assert UsageEvent.objects.get().idempotency_key == key


def test_idempotency_keys_belong_to_one_customer(api, customer):
    other = CustomerFactory()

    assert record(api, customer, idempotencyKey="k1").status_code == 201
    assert record(api, other, idempotencyKey="k1").status_code == 201

    assert UsageEvent.objects.filter(idempotency_key="k1").count() == 2


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_concurrent_sends_of_one_key_record_one_event(operator_key):
    """Twenty sends of one key at once, in the body or the header: one is recorded, the
    others with the same body replay it, those with another body are conflicts."""
    for round_ in range(5):
        customer = CustomerFactory()
        subscribe(customer, quotas={"seo": 1000})
        key = f"k-{round_}"

        def send(i, customer=customer, key=key):
            body = {"primitive": "seo", "quantity": 3 if i % 5 else 4}
            if i % 2:
                body["idempotencyKey"] = key
                headers = {}
            else:
                headers = {"Idempotency-Key": key}
            return Client(headers={"Authorization": f"Bearer {operator_key}", **headers}).post(
                usage_url(customer.pk), body, content_type="application/json"
            )

        answers = in_parallel(send, 20)

        event = UsageEvent.objects.get(customer_id=customer.pk)
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(201) == 1
        winner = next(a.json() for a in answers if a.status_code == 201)
        same = 16 if winner["event"]["quantity"] == 3 else 4
        assert statuses == sorted([201] + [200] * (same - 1) + [409] * (20 - same))
        assert {a.json()["event"]["id"] for a in answers if a.status_code != 409} == {event.pk}
        assert all("idempotencyKey" in a.json() for a in answers if a.status_code == 409)
        assert UsageCounter.objects.get(customer_id=customer.pk).used == event.quantity
        assert IdempotencyKey.objects.filter(customer_id=customer.pk).count() == 1


# Enforcement of reported usage


@pytest.mark.parametrize(
    ("configured", "status", "error"),
    [(None, 429, "rate_limited"), (402, 402, "usage_limit_exceeded")],
)
def test_enforced_usage_over_quota_is_refused(settings, api, customer, configured, status, error):
    if configured is not None:
        settings.BILLING_QUOTA_EXCEEDED_STATUS = configured
    subscribe(customer, quotas={"seo": 10})
    assert record(api, customer, quantity=8).status_code == 201
    before = ledger()

    response = record(api, customer, quantity=3, idempotencyKey="k2")

    assert response.status_code == status
    body = response.json()
    assert body == {
        "error": error,
        "message": body["message"],
        "primitive": "seo",
        "usage": {"current": 8, "limit": 10},
        "resetsAt": iso(window_now(customer).end),
    }
    assert int(response["Retry-After"]) >= 1
    assert ledger() == before
    # The refused key was not spent: it records once the usage fits.
    assert record(api, customer, quantity=2, idempotencyKey="k2").status_code == 201


@pytest.mark.parametrize(
    ("arrange", "status", "error"),
    [
        pytest.param(
            lambda customer: subscribe(customer, quotas={"seo": 10}, primitives=["aeo"]),
            403,
            "primitive_not_allowed",
            id="not-in-kit",
        ),
        pytest.param(
            lambda customer: subscribe(customer, quotas={"seo": 10}, status="canceled"),
            402,
            "subscription_inactive",
            id="inactive",
        ),
        pytest.param(
            lambda customer: subscribe(customer, quotas={"seo": 0}),
            429,
            "rate_limited",
            id="zero-quota",
        ),
    ],
)
def test_enforced_usage_is_refused_like_a_metered_call(api, customer, arrange, status, error):
    arrange(customer)

    response = record(api, customer, idempotencyKey="k")

    assert response.status_code == status
    assert response.json()["error"] == error
    assert ledger() == ([], [], [])


def test_unenforced_usage_records_overage(api, customer):
    subscribe(customer, quotas={"seo": 10})
    assert record(api, customer, quantity=8).status_code == 201

    response = record(api, customer, quantity=5, enforce=False)

    assert response.status_code == 201
    assert response.json()["usage"]["used"] == 13
    assert counter(customer, window_now(customer)) == 13
    assert UsageEvent.objects.count() == 2
    # Enforced calls stay refused while the window is over its quota.
    assert record(api, customer).status_code == 429


def test_a_replay_is_answered_even_when_the_window_is_full(api, customer):
    subscribe(customer, quotas={"seo": 2})
    first = record(api, customer, quantity=2, idempotencyKey="k1")

    again = record(api, customer, quantity=2, idempotencyKey="k1")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["event"] == first.json()["event"]
    assert UsageEvent.objects.count() == 1


def test_usage_that_would_overflow_the_counter_is_a_400(api, customer):
    """Each quantity is valid alone; their sum does not fit the counter's column."""
    api.raise_request_exception = False
    assert record(api, customer, quantity=2**63 - 1, enforce=False).status_code == 201
    before = ledger()

    response = record(api, customer, quantity=1, enforce=False)

    assert response.status_code == 400
    assert "quantity" in response.json()
    assert ledger() == before


def test_unenforced_usage_reports_the_plan_quota(api, customer):
    """The window's usage in the answer says how far over the quota the customer is."""
    subscribe(customer, quotas={"seo": 10})

    response = record(api, customer, quantity=12, enforce=False)

    assert response.status_code == 201
    assert response.json()["usage"] | {"windowStart": None, "windowEnd": None} == {
        "used": 12,
        "limit": 10,
        "remaining": 0,
        "windowStart": None,
        "windowEnd": None,
    }


def test_enforced_usage_ignores_the_per_minute_rate(rate_minute, api, customer, customer_token):
    """The kit's per-minute rate limits live calls; reported usage is not refused by it."""
    kit, _ = catalog.account_kit_upsert(key="slow", name="Slow", primitives={"seo": 1})
    customers.kit_assign(customer=customer, kit=kit)
    live = bearer(customer_token)
    assert live.post("/demo/seo/").status_code == 200
    assert live.post("/demo/seo/").json()["error"] == "too_many_requests"

    response = record(api, customer)

    assert response.status_code == 201, response.content


def test_a_past_timestamp_counts_in_its_own_window(api, customer):
    subscription = subscribe(customer, quotas={"seo": 5}, period="day")
    anchor = subscription.billing_cycle_anchor
    now = timezone.now()
    yesterday = window_for("day", now - timedelta(days=1), anchor=anchor)
    today = window_for("day", now, anchor=anchor)

    response = record(api, customer, quantity=2, timestamp=iso(now - timedelta(days=1)))

    assert response.status_code == 201, response.content
    assert parse_time(response.json()["usage"]["windowStart"]) == yesterday.start
    assert counter(customer, yesterday) == 2
    assert counter(customer, today) == 0
    assert UsageEvent.objects.get().window_start == yesterday.start
    # Yesterday's quota is yesterday's: 4 more do not fit there, but do today.
    assert (
        record(api, customer, quantity=4, timestamp=iso(now - timedelta(days=1))).status_code == 429
    )
    assert record(api, customer, quantity=4).status_code == 201


def test_a_past_timestamp_counts_in_its_anchored_window(api, customer):
    now = timezone.now()
    anchor = now - timedelta(days=10, hours=7)
    subscribe(customer, quotas={"seo": 5}, period="week", billing_cycle_anchor=anchor)
    previous = window_for("week", now - timedelta(days=7), anchor=anchor)
    assert previous.start == anchor

    response = record(api, customer, timestamp=iso(now - timedelta(days=7)))

    assert response.status_code == 201
    assert counter(customer, previous) == 1
    assert UsageCounter.objects.get().window_start == anchor


@pytest.mark.parametrize(
    ("offset", "late_window", "status"),
    [
        (timedelta(days=-34), None, 201),
        (timedelta(days=-36), None, 400),
        (timedelta(days=-3), timedelta(days=2), 400),
        (timedelta(days=-1), timedelta(days=2), 201),
        (timedelta(minutes=4), None, 201),
        (timedelta(minutes=6), None, 400),
        (timedelta(days=1), None, 400),
    ],
)
def test_timestamps_outside_the_accepted_range_are_refused(
    settings, api, customer, offset, late_window, status
):
    if late_window is not None:
        settings.BILLING_LATE_USAGE_WINDOW = late_window

    response = record(api, customer, timestamp=iso(timezone.now() + offset))

    assert response.status_code == status, response.content
    if status == 400:
        assert set(response.json()) == {"timestamp"}
        assert UsageEvent.objects.count() == 0
    else:
        assert UsageEvent.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"primitive": "SEO"}, "primitive"),
        ({"primitive": "no spaces"}, "primitive"),
        ({"primitive": ""}, "primitive"),
        ({"primitive": "a" * 65}, "primitive"),
        ({"primitive": None}, "primitive"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": -5}, "quantity"),
        ({"quantity": "lots"}, "quantity"),
        ({"quantity": 2**63}, "quantity"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"timestamp": "2026-13-45T00:00:00Z"}, "timestamp"),
        ({"enforce": "maybe"}, "enforce"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, customer, body, field):
    response = api.post(usage_url(customer.pk), {"primitive": "seo", **body}, format="json")

    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert UsageEvent.objects.count() == 0


def test_a_missing_primitive_is_a_400(api, customer):
    response = api.post(usage_url(customer.pk), {"quantity": 1}, format="json")

    assert response.status_code == 400
    assert "primitive" in response.json()


@pytest.mark.parametrize("customer_id", [absent_customer_id, lambda: "nobody"])
def test_recording_for_an_unknown_customer_is_a_404(api, customer_id):
    response = api.post(usage_url(customer_id()), {"primitive": "seo"}, format="json")

    assert response.status_code == 404
    assert UsageEvent.objects.count() == 0


def test_a_customer_token_may_not_record_usage(customer, customer_client):
    response = customer_client.post(usage_url(customer.pk), {"primitive": "seo"}, format="json")

    assert response.status_code == 403
    assert UsageEvent.objects.count() == 0


def test_recording_needs_credentials(anonymous, customer):
    response = anonymous.post(usage_url(customer.pk), {"primitive": "seo"}, format="json")

    assert response.status_code == 401
    assert UsageEvent.objects.count() == 0


# GET /v1/users/<id>/billing/check


def check(api: APIClient, customer, **params):
    return api.get(check_url(customer.pk), {"primitive": "seo", **params})


@pytest.mark.parametrize(
    ("arrange", "params", "expected"),
    [
        pytest.param(
            lambda customer: subscribe(customer, quotas={"seo": 3}),
            {},
            {"allowed": True, "reason": None, "limit": 3, "used": 1, "remaining": 2},
            id="allowed",
        ),
        pytest.param(
            lambda customer: subscribe(customer, quotas={"seo": 3}),
            {"quantity": 2},
            {"allowed": True, "reason": None, "limit": 3, "used": 1, "remaining": 2},
            id="allowed-quantity-fits",
        ),
        pytest.param(
            lambda customer: subscribe(customer, quotas={"seo": 3}),
            {"quantity": 3},
            {"allowed": False, "reason": "rate_limited", "limit": 3, "used": 1, "remaining": 2},
            id="quantity-does-not-fit",
        ),
        pytest.param(
            lambda customer: subscribe(customer, quotas={"seo": 1}),
            {},
            {"allowed": False, "reason": "rate_limited", "limit": 1, "used": 1, "remaining": 0},
            id="over-quota",
        ),
        pytest.param(
            lambda customer: subscribe(customer, quotas={"seo": 3}, primitives=["aeo"]),
            {},
            {
                "allowed": False,
                "reason": "primitive_not_allowed",
                "limit": 3,
                "used": 1,
                "remaining": 2,
            },
            id="not-in-kit",
        ),
        pytest.param(
            lambda customer: subscribe(customer, quotas={"seo": 3}, status="unpaid"),
            {},
            {
                "allowed": False,
                "reason": "subscription_inactive",
                "limit": 3,
                "used": 1,
                "remaining": 2,
            },
            id="inactive",
        ),
        pytest.param(
            lambda customer: None,
            {"quantity": 1000},
            {"allowed": True, "reason": None, "limit": None, "used": 1, "remaining": None},
            id="no-subscription",
        ),
        pytest.param(
            lambda customer: subscribe(customer, quotas={"aeo": 3}),
            {},
            {"allowed": True, "reason": None, "limit": None, "used": 1, "remaining": None},
            id="no-quota",
        ),
    ],
)
def test_check_says_whether_a_call_would_be_admitted(api, customer, arrange, params, expected):
    arrange(customer)
    use(customer, 1, timezone.now())
    before = ledger()

    response = check(api, customer, **params)

    assert response.status_code == 200, response.content
    assert response.json() == {**expected, "resetsAt": iso(window_now(customer).end)}
    assert ledger() == before


def test_check_consumes_nothing(api, customer, customer_token):
    subscribe(customer, quotas={"seo": 2})
    for _ in range(5):
        assert check(api, customer).json()["allowed"] is True

    assert UsageEvent.objects.count() == 0
    assert UsageCounter.objects.count() == 0
    live = bearer(customer_token)
    assert [live.post("/demo/seo/").status_code for _ in range(3)] == [200, 200, 429]


def test_check_reports_the_kit_rate_limit_without_counting_towards_it(
    rate_minute, api, customer, customer_token
):
    kit, _ = catalog.account_kit_upsert(key="slow", name="Slow", primitives={"seo": 2})
    customers.kit_assign(customer=customer, kit=kit)
    live = bearer(customer_token)

    for _ in range(5):
        assert check(api, customer).json()["allowed"] is True
    assert [live.post("/demo/seo/").status_code for _ in range(2)] == [200, 200]

    body = check(api, customer).json()
    assert (body["allowed"], body["reason"]) == (False, "too_many_requests")
    rate_minute.advance()
    assert check(api, customer).json()["allowed"] is True


def test_check_sees_usage_recorded_through_metered_calls(api, customer, customer_token):
    subscribe(customer, quotas={"seo": 2})
    bearer(customer_token).post("/demo/seo/")

    body = check(api, customer).json()

    assert (body["used"], body["remaining"], body["allowed"]) == (1, 1, True)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"primitive": None}, "primitive"),
        ({"primitive": "NOT A SLUG"}, "primitive"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": "x"}, "quantity"),
    ],
)
def test_check_bad_input_is_a_400_naming_the_field(api, customer, params, field):
    query = {k: v for k, v in {"primitive": "seo", **params}.items() if v is not None}

    response = api.get(check_url(customer.pk), query)

    assert response.status_code == 400
    assert field in response.json(), response.json()


@pytest.mark.parametrize("customer_id", [absent_customer_id, lambda: "nobody"])
def test_check_of_an_unknown_customer_is_a_404(api, customer_id):
    assert api.get(check_url(customer_id()), {"primitive": "seo"}).status_code == 404


def test_a_customer_token_may_not_check(customer, customer_client):
    response = customer_client.get(check_url(customer.pk), {"primitive": "seo"})

    assert response.status_code == 403


# JSON that Python cannot take whole: nesting past the recursion limit, lone surrogates


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [900, 100_000])
@pytest.mark.parametrize(
    ("path", "field"),
    [(lambda c: usage_url(c.pk), "primitive"), (lambda c: "/v1/plans", "key")],
    ids=["usage", "plans"],
)
def test_deeply_nested_json_is_a_400_and_changes_nothing(api, customer, path, field, depth):
    """Past the recursion limit the body does not parse; below it, the nested value is
    not what the field takes."""
    from billing_app.models import Plan

    body = '{"primitive": "seo", "key": "p", "name": "P", "' + field + '": ' + nested(depth)

    response = api.post(path(customer), body + "}", content_type="application/json")

    assert response.status_code == 400, response.content
    if depth < 1000:
        assert field in response.json()
    assert ledger() == ([], [], [])
    assert not Plan.objects.exists()


def test_a_deeply_nested_batch_is_a_400_and_changes_nothing(api, customer):
    response = api.post(
        "/v1/usage/events", '{"events": ' + nested(100_000) + "}", content_type="application/json"
    )

    assert response.status_code == 400
    assert ledger() == ([], [], [])


def test_a_lone_surrogate_is_a_400_naming_the_field_and_changes_nothing(api, customer):
    body = '{"primitive": "seo", "timestamp": "2026-01-01T00:00:00\\ud800Z"}'

    response = api.post(usage_url(customer.pk), body, content_type="application/json")

    assert response.status_code == 400
    assert set(response.json()) == {"timestamp"}, response.json()
    assert ledger() == ([], [], [])
