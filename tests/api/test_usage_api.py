"""The usage API: ``POST /v1/users/<id>/billing/usage`` (record, idempotent) and
``GET /v1/users/<id>/billing/check`` (may the tenant use it now; consumes nothing)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from billing_app import selectors, services
from billing_app.models import UsageCounter, UsageEvent
from billing_app.periods import window_for
from billing_app.testutils import subscribe

from ..factories import UserFactory

pytestmark = pytest.mark.django_db


def usage_url(user_id) -> str:
    return f"/v1/users/{user_id}/billing/usage"


def check_url(user_id) -> str:
    return f"/v1/users/{user_id}/billing/check"


def record(api: APIClient, user, **body):
    body.setdefault("primitive", "seo")
    return api.post(usage_url(user.pk), body, format="json")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def iso(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def ledger(user=None) -> tuple[list[tuple], list[tuple]]:
    """Every counter and event (of ``user``), to prove a request changed nothing."""
    counters = UsageCounter.objects.order_by("pk")
    events = UsageEvent.objects.order_by("pk")
    if user is not None:
        counters, events = counters.filter(user=user), events.filter(user=user)
    return (
        list(counters.values_list("user_id", "primitive", "window_start", "used")),
        list(events.values_list("pk", "primitive", "quantity", "idempotency_key")),
    )


def counter(user, window, primitive: str = "seo") -> int:
    return services.usage_used(user_id=user.pk, primitive=primitive, window=window)


def month_window():
    return window_for("month", timezone.now())


@pytest.fixture
def rate_clock(monkeypatch):
    """Freeze django-ratelimit's clock, so no minute boundary falls inside a test."""
    import django_ratelimit.core

    clock = SimpleNamespace(now=1_800_000_000.0)
    monkeypatch.setattr(django_ratelimit.core, "time", SimpleNamespace(time=lambda: clock.now))
    return clock


# POST /v1/users/<id>/billing/usage


def test_record_answers_201_with_the_event_and_the_window_usage(api, tenant):
    subscribe(tenant, quotas={"llm.tokens": 5000})
    window = month_window()
    before = timezone.now()

    response = record(api, tenant, primitive="llm.tokens", quantity=1200, idempotencyKey="k1")

    assert response.status_code == 201, response.content
    body = response.json()
    event = UsageEvent.objects.get()
    assert (event.user_id, event.primitive, event.quantity, event.idempotency_key) == (
        tenant.pk,
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
    assert counter(tenant, window, "llm.tokens") == 1200


def test_quantity_defaults_to_one(api, tenant):
    response = record(api, tenant)

    assert response.status_code == 201
    assert response.json()["event"]["quantity"] == 1
    assert response.json()["usage"]["used"] == 1


def test_the_same_key_again_answers_the_first_result(api, tenant):
    subscribe(tenant, quotas={"seo": 10})
    first = record(api, tenant, quantity=3, idempotencyKey="k1")
    assert first.status_code == 201

    again = record(api, tenant, quantity=3, idempotencyKey="k1")

    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert {**again.json(), "duplicate": False} == first.json()
    assert UsageEvent.objects.count() == 1
    assert counter(tenant, month_window()) == 3


def test_the_same_key_with_a_timestamp_replays_too(api, tenant):
    timestamp = iso(timezone.now() - timedelta(hours=1))
    first = record(api, tenant, idempotencyKey="k1", timestamp=timestamp)

    again = record(api, tenant, idempotencyKey="k1", timestamp=timestamp)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["event"] == first.json()["event"]
    assert UsageEvent.objects.count() == 1


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(lambda: {"quantity": 4}, id="quantity"),
        pytest.param(lambda: {"primitive": "aeo"}, id="primitive"),
        pytest.param(lambda: {"timestamp": iso(timezone.now() - timedelta(hours=1))}, id="time"),
    ],
)
def test_the_same_key_with_a_different_body_is_a_conflict(api, tenant, changed):
    assert record(api, tenant, quantity=3, idempotencyKey="k1").status_code == 201
    before = ledger()

    response = record(api, tenant, **{"quantity": 3, "idempotencyKey": "k1", **changed()})

    assert response.status_code == 409
    assert "idempotencyKey" in response.json()
    assert ledger() == before


def test_the_key_may_come_as_the_idempotency_key_header(api, tenant):
    def send():
        return api.post(
            usage_url(tenant.pk),
            {"primitive": "seo", "quantity": 2},
            format="json",
            headers={"Idempotency-Key": "h1"},
        )

    first, again = send(), send()

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["event"]["idempotencyKey"] == "h1"
    assert again.json()["duplicate"] is True
    assert UsageEvent.objects.get().idempotency_key == "h1"
    assert counter(tenant, month_window()) == 2


def test_idempotency_keys_belong_to_one_tenant(api, tenant):
    other = UserFactory()

    assert record(api, tenant, idempotencyKey="k1").status_code == 201
    assert record(api, other, idempotencyKey="k1").status_code == 201

    assert UsageEvent.objects.filter(idempotency_key="k1").count() == 2


def test_without_a_key_every_request_is_recorded(api, tenant):
    assert [record(api, tenant).status_code for _ in range(3)] == [201, 201, 201]
    assert UsageEvent.objects.count() == 3


@pytest.mark.parametrize(("configured", "status"), [(None, 429), (402, 402)])
def test_enforced_usage_over_quota_is_refused(settings, api, tenant, configured, status):
    if configured is not None:
        settings.BILLING_QUOTA_EXCEEDED_STATUS = configured
    subscribe(tenant, quotas={"seo": 10})
    assert record(api, tenant, quantity=8).status_code == 201
    before = ledger()

    response = record(api, tenant, quantity=3, idempotencyKey="k2")

    assert response.status_code == status
    body = response.json()
    assert body == {
        "error": "rate_limited",
        "message": body["message"],
        "primitive": "seo",
        "usage": {"current": 8, "limit": 10},
        "resetsAt": iso(month_window().end),
    }
    assert int(response["Retry-After"]) >= 1
    assert ledger() == before
    # The refused key was not spent: it records once the usage fits.
    assert record(api, tenant, quantity=2, idempotencyKey="k2").status_code == 201


@pytest.mark.parametrize(
    ("arrange", "status", "error"),
    [
        pytest.param(
            lambda user: subscribe(user, quotas={"seo": 10}, primitives=["aeo"]),
            403,
            "primitive_not_allowed",
            id="not-in-kit",
        ),
        pytest.param(
            lambda user: subscribe(user, quotas={"seo": 10}, status="canceled"),
            402,
            "subscription_inactive",
            id="inactive",
        ),
        pytest.param(
            lambda user: subscribe(user, quotas={"seo": 0}), 429, "rate_limited", id="zero-quota"
        ),
    ],
)
def test_enforced_usage_is_refused_like_a_metered_call(api, tenant, arrange, status, error):
    arrange(tenant)

    response = record(api, tenant)

    assert response.status_code == status
    assert response.json()["error"] == error
    assert UsageEvent.objects.count() == 0


def test_unenforced_usage_records_overage(api, tenant):
    subscribe(tenant, quotas={"seo": 10})
    assert record(api, tenant, quantity=8).status_code == 201

    response = record(api, tenant, quantity=5, enforce=False)

    assert response.status_code == 201
    assert response.json()["usage"]["used"] == 13
    assert counter(tenant, month_window()) == 13
    assert UsageEvent.objects.count() == 2
    # Enforced calls stay refused while the window is over its quota.
    assert record(api, tenant).status_code == 429


def test_a_replay_is_answered_even_when_the_window_is_full(api, tenant):
    subscribe(tenant, quotas={"seo": 2})
    first = record(api, tenant, quantity=2, idempotencyKey="k1")

    again = record(api, tenant, quantity=2, idempotencyKey="k1")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["event"] == first.json()["event"]
    assert UsageEvent.objects.count() == 1


def test_usage_that_would_overflow_the_counter_is_a_400(api, tenant):
    """Each quantity is valid alone; their sum does not fit the counter's column."""
    api.raise_request_exception = False
    assert record(api, tenant, quantity=2**63 - 1, enforce=False).status_code == 201
    before = ledger()

    response = record(api, tenant, quantity=1, enforce=False)

    assert response.status_code == 400
    assert "quantity" in response.json()
    assert ledger() == before


def test_unenforced_usage_reports_the_plan_quota(api, tenant):
    """The window's usage in the answer says how far over the quota the tenant is."""
    subscribe(tenant, quotas={"seo": 10})

    response = record(api, tenant, quantity=12, enforce=False)

    assert response.status_code == 201
    assert response.json()["usage"] | {"windowStart": None, "windowEnd": None} == {
        "used": 12,
        "limit": 10,
        "remaining": 0,
        "windowStart": None,
        "windowEnd": None,
    }


def test_enforced_usage_ignores_the_per_minute_rate(rate_clock, api, tenant, tenant_token):
    """The kit's per-minute rate limits live calls; reported usage is not refused by it."""
    kit, _ = services.account_kit_upsert(key="slow", name="Slow", primitives={"seo": 1})
    services.kit_assign(user=tenant, kit=kit)
    live = Client(headers={"Authorization": f"Bearer {tenant_token}"})
    assert live.post("/demo/seo/").status_code == 200
    assert live.post("/demo/seo/").status_code == 429  # the rate is used up

    response = record(api, tenant)

    assert response.status_code == 201, response.content


def test_a_past_timestamp_counts_in_its_own_window(api, tenant):
    subscribe(tenant, quotas={"seo": 5}, period="day")
    now = timezone.now()
    yesterday = window_for("day", now - timedelta(days=1))
    today = window_for("day", now)

    response = record(api, tenant, quantity=2, timestamp=iso(now - timedelta(days=1)))

    assert response.status_code == 201, response.content
    assert parse_time(response.json()["usage"]["windowStart"]) == yesterday.start
    assert counter(tenant, yesterday) == 2
    assert counter(tenant, today) == 0
    assert UsageEvent.objects.get().window_start == yesterday.start
    # Yesterday's quota is yesterday's: 4 more do not fit there, but do today.
    assert (
        record(api, tenant, quantity=4, timestamp=iso(now - timedelta(days=1))).status_code == 429
    )
    assert record(api, tenant, quantity=4).status_code == 201


def test_a_past_timestamp_counts_in_its_anchored_window(api, tenant):
    now = timezone.now()
    anchor = now - timedelta(days=10, hours=7)
    subscribe(tenant, quotas={"seo": 5}, period="week", current_period_start=anchor)
    previous = window_for("week", now - timedelta(days=7), anchor=anchor)

    response = record(api, tenant, timestamp=iso(now - timedelta(days=7)))

    assert response.status_code == 201
    assert counter(tenant, previous) == 1
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
    settings, api, tenant, offset, late_window, status
):
    if late_window is not None:
        settings.BILLING_LATE_USAGE_WINDOW = late_window

    response = record(api, tenant, timestamp=iso(timezone.now() + offset))

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
        ({"enforce": "maybe"}, "enforce"),
        ({"idempotencyKey": "k" * 256}, "idempotencyKey"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, tenant, body, field):
    response = api.post(usage_url(tenant.pk), {"primitive": "seo", **body}, format="json")

    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert UsageEvent.objects.count() == 0


def test_a_missing_primitive_is_a_400(api, tenant):
    response = api.post(usage_url(tenant.pk), {"quantity": 1}, format="json")

    assert response.status_code == 400
    assert "primitive" in response.json()


@pytest.mark.parametrize("user_id", ["999999", "nobody"])
def test_recording_for_an_unknown_user_is_a_404(api, user_id):
    response = api.post(usage_url(user_id), {"primitive": "seo"}, format="json")

    assert response.status_code == 404
    assert UsageEvent.objects.count() == 0


def test_a_tenant_token_may_not_record_usage(tenant, tenant_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_token}")

    response = client.post(usage_url(tenant.pk), {"primitive": "seo"}, format="json")

    assert response.status_code == 403
    assert UsageEvent.objects.count() == 0


def test_recording_needs_credentials(anonymous, tenant):
    response = anonymous.post(usage_url(tenant.pk), {"primitive": "seo"}, format="json")

    assert response.status_code == 401
    assert UsageEvent.objects.count() == 0


# GET /v1/users/<id>/billing/check


def check(api: APIClient, user, **params):
    return api.get(check_url(user.pk), {"primitive": "seo", **params})


def use(user, quantity: int, primitive: str = "seo") -> None:
    """Usage already in the tenant's current window, recorded as the API would."""
    window = selectors.entitlement_for(user_id=user.pk).window(timezone.now())
    services.usage_reserve(
        user_id=user.pk,
        primitive=primitive,
        quantity=quantity,
        window=window,
        limit=None,
        occurred_at=timezone.now(),
    )


@pytest.mark.parametrize(
    ("arrange", "params", "expected"),
    [
        pytest.param(
            lambda user: subscribe(user, quotas={"seo": 3}),
            {},
            {"allowed": True, "reason": None, "limit": 3, "used": 1, "remaining": 2},
            id="allowed",
        ),
        pytest.param(
            lambda user: subscribe(user, quotas={"seo": 3}),
            {"quantity": 2},
            {"allowed": True, "reason": None, "limit": 3, "used": 1, "remaining": 2},
            id="allowed-quantity-fits",
        ),
        pytest.param(
            lambda user: subscribe(user, quotas={"seo": 3}),
            {"quantity": 3},
            {"allowed": False, "reason": "rate_limited", "limit": 3, "used": 1, "remaining": 2},
            id="quantity-does-not-fit",
        ),
        pytest.param(
            lambda user: subscribe(user, quotas={"seo": 1}),
            {},
            {"allowed": False, "reason": "rate_limited", "limit": 1, "used": 1, "remaining": 0},
            id="over-quota",
        ),
        pytest.param(
            lambda user: subscribe(user, quotas={"seo": 3}, primitives=["aeo"]),
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
            lambda user: subscribe(user, quotas={"seo": 3}, status="unpaid"),
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
            lambda user: None,
            {"quantity": 1000},
            {"allowed": True, "reason": None, "limit": None, "used": 1, "remaining": None},
            id="no-subscription",
        ),
        pytest.param(
            lambda user: subscribe(user, quotas={"aeo": 3}),
            {},
            {"allowed": True, "reason": None, "limit": None, "used": 1, "remaining": None},
            id="no-quota",
        ),
    ],
)
def test_check_says_whether_a_call_would_be_admitted(api, tenant, arrange, params, expected):
    arrange(tenant)
    use(tenant, 1)
    window = selectors.entitlement_for(user_id=tenant.pk).window(timezone.now())
    before = ledger()

    response = check(api, tenant, **params)

    assert response.status_code == 200, response.content
    assert response.json() == {**expected, "resetsAt": iso(window.end)}
    assert ledger() == before


def test_check_consumes_nothing(api, tenant, tenant_token):
    subscribe(tenant, quotas={"seo": 2})
    for _ in range(5):
        assert check(api, tenant).json()["allowed"] is True

    assert UsageEvent.objects.count() == 0
    assert UsageCounter.objects.count() == 0
    live = Client(headers={"Authorization": f"Bearer {tenant_token}"})
    assert [live.post("/demo/seo/").status_code for _ in range(3)] == [200, 200, 429]


def test_check_reports_the_kit_rate_limit_without_counting_towards_it(
    rate_clock, api, tenant, tenant_token
):
    kit, _ = services.account_kit_upsert(key="slow", name="Slow", primitives={"seo": 2})
    services.kit_assign(user=tenant, kit=kit)
    live = Client(headers={"Authorization": f"Bearer {tenant_token}"})

    for _ in range(5):
        assert check(api, tenant).json()["allowed"] is True
    assert [live.post("/demo/seo/").status_code for _ in range(2)] == [200, 200]

    body = check(api, tenant).json()
    assert (body["allowed"], body["reason"]) == (False, "rate_limited")


def test_check_sees_usage_recorded_through_metered_calls(api, tenant, tenant_token):
    subscribe(tenant, quotas={"seo": 2})
    live = Client(headers={"Authorization": f"Bearer {tenant_token}"})
    live.post("/demo/seo/", data=json.dumps({}), content_type="application/json")

    body = check(api, tenant).json()

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
def test_check_bad_input_is_a_400_naming_the_field(api, tenant, params, field):
    query = {k: v for k, v in {"primitive": "seo", **params}.items() if v is not None}

    response = api.get(check_url(tenant.pk), query)

    assert response.status_code == 400
    assert field in response.json(), response.json()


def test_check_of_an_unknown_user_is_a_404(api):
    assert api.get(check_url(999999), {"primitive": "seo"}).status_code == 404


def test_a_tenant_token_may_not_check(tenant, tenant_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_token}")

    assert client.get(check_url(tenant.pk), {"primitive": "seo"}).status_code == 403
