"""Overage: soft quotas let calls through, and a closed cycle's excess is billed on Stripe
exactly once, through the outbox, across retries and crashes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing_app import cycles, enforcement, outbox, services
from billing_app.models import OutboxMessage, UsageRecord
from billing_app.periods import add_months

pytestmark = pytest.mark.django_db


@pytest.fixture
def metered_plan(db):
    services.plan_upsert(
        key="metered",
        name="Metered",
        quotas={"seo": 10, "aeo": 5},
        overage={"seo": "0.5"},  # half a cent per seo call past 10; aeo blocks
    )


def on_stripe(user, customer="cus_over", days_ago=40):
    """Subscribed with a Stripe customer, since a month that has ended."""
    start = timezone.now() - timedelta(days=days_ago)
    services.subscription_set(
        user=user,
        plan_key="metered",
        stripe_customer_id=customer,
        current_period_start=start,
        current_period_end=add_months(start, 1),
    )
    UsageRecord.objects.filter(user=user).delete()
    cycles.follow(user=user, at=start)
    return start


def test_a_billed_quota_lets_calls_through_and_a_blocking_one_refuses(
    metered_plan, tenant, tenant_token, client
):
    services.subscription_set(user=tenant, plan_key="metered")
    seo = [
        client.post("/demo/seo/", HTTP_AUTHORIZATION=f"Bearer {tenant_token}").status_code
        for _ in range(12)
    ]
    aeo = [
        client.post("/demo/aeo/", HTTP_AUTHORIZATION=f"Bearer {tenant_token}").status_code
        for _ in range(6)
    ]
    assert seo == [200] * 12
    assert aeo == [200] * 5 + [429]
    assert enforcement.check(user=tenant, primitive="seo").allowed is True
    assert enforcement.check(user=tenant, primitive="aeo").allowed is False


def test_plan_api_sets_and_shows_overage_prices(api):
    body = {"key": "m", "name": "M", "quotas": {"seo": 10}, "overage": {"seo": "0.25"}}
    response = api.post("/v1/plans", body, format="json")
    assert response.status_code == 201
    assert response.json()["overage"] == {"seo": "0.25"}

    bad = api.post("/v1/plans", {**body, "overage": {"aeo": "1"}}, format="json")
    assert bad.status_code == 400 and "overage" in bad.json()
    negative = api.post("/v1/plans", {**body, "overage": {"seo": "-1"}}, format="json")
    assert negative.status_code == 400 and "overage" in negative.json()
    assert api.get("/v1/plans").json()[0]["overage"] == {"seo": "0.25"}


def test_closing_writes_one_invoice_item_intent_per_billed_primitive(metered_plan, tenant):
    start = on_stripe(tenant)
    enforcement.record(
        user=tenant, primitive="seo", quantity=15, timestamp=start + timedelta(days=6)
    )
    enforcement.record(
        user=tenant, primitive="aeo", quantity=8, timestamp=start + timedelta(days=6), enforce=False
    )

    (record,) = cycles.close_cycles()
    cycles.close_cycles()  # again: nothing more

    (message,) = OutboxMessage.objects.all()
    assert message.kind == "stripe_invoice_item" and message.state == "pending"
    assert message.key == f"billing-overage-{record.pk}-seo"
    assert message.payload["customer"] == "cus_over"
    assert message.payload["quantity"] == 5
    assert message.payload["unit_amount_decimal"] == "0.5"
    assert message.payload["currency"] == "usd"


def test_no_stripe_customer_no_charge(metered_plan, tenant):
    start = on_stripe(tenant, customer="")
    enforcement.record(
        user=tenant, primitive="seo", quantity=15, timestamp=start + timedelta(days=6)
    )
    cycles.close_cycles()
    assert not OutboxMessage.objects.exists()
    assert UsageRecord.objects.get(status="recorded").usage["seo"]["overage"] == 5


def overage_message(tenant):
    start = on_stripe(tenant)
    enforcement.record(
        user=tenant, primitive="seo", quantity=13, timestamp=start + timedelta(days=6)
    )
    cycles.close_cycles()
    return OutboxMessage.objects.get()


def invoice_items(stripe_stub):
    return [o for o in stripe_stub.objects.values() if o["object"] == "invoiceitem"]


def test_delivery_sends_the_invoice_item_with_its_idempotency_key(
    metered_plan, tenant, stripe_stub
):
    stripe_stub.customer(id="cus_over")  # Stripe bills only a customer it has
    message = overage_message(tenant)

    assert outbox.deliver() == 1
    assert outbox.deliver() == 0

    (sent,) = stripe_stub.calls("POST", "/v1/invoiceitems")
    assert sent.headers["idempotency-key"] == message.key
    assert sent.params["customer"] == "cus_over"
    assert sent.params["quantity"] == "3"
    assert sent.params["unit_amount_decimal"] == "0.5"
    message.refresh_from_db()
    assert message.state == "delivered" and message.answer["id"].startswith("ii_")
    assert len(invoice_items(stripe_stub)) == 1


def test_an_answer_lost_on_the_way_is_retried_without_billing_twice(
    metered_plan, tenant, stripe_stub
):
    stripe_stub.customer(id="cus_over")  # Stripe bills only a customer it has
    message = overage_message(tenant)

    def lose_first_answer(request, status, body):
        if (
            request.path == "/v1/invoiceitems"
            and len(stripe_stub.calls("POST", "/v1/invoiceitems")) == 1
        ):
            raise RuntimeError("connection reset")  # Stripe made it; we never hear so

    stripe_stub.after = lose_first_answer
    assert outbox.deliver() == 0
    message.refresh_from_db()
    assert (message.state, message.attempts) == ("pending", 1)
    assert "connection reset" in message.last_error

    assert outbox.deliver(now=message.next_attempt_at) == 1
    assert len(invoice_items(stripe_stub)) == 1
    assert len(stripe_stub.calls("POST", "/v1/invoiceitems")) >= 2


def test_a_crash_between_stripes_answer_and_our_commit_never_bills_twice(
    metered_plan, tenant, stripe_stub, monkeypatch
):
    stripe_stub.customer(id="cus_over")  # Stripe bills only a customer it has
    message = overage_message(tenant)
    real = outbox._delivered

    def crash(message, answer):
        raise SystemExit("the worker died after Stripe answered")

    monkeypatch.setattr(outbox, "_delivered", crash)
    with pytest.raises(SystemExit):
        outbox.deliver()
    message.refresh_from_db()
    assert (message.state, message.attempts) == ("pending", 0)  # the commit never happened

    monkeypatch.setattr(outbox, "_delivered", real)
    assert outbox.deliver() == 1

    assert len(invoice_items(stripe_stub)) == 1  # Stripe replayed its first answer
    keys = {r.headers["idempotency-key"] for r in stripe_stub.calls("POST", "/v1/invoiceitems")}
    assert keys == {message.key}


def test_retries_end_in_failed_and_the_admin_can_retry(metered_plan, tenant, stripe_stub):
    stripe_stub.customer(id="cus_over")  # Stripe bills only a customer it has
    message = overage_message(tenant)

    def stripe_is_down(request):
        raise RuntimeError("Stripe is down")

    stripe_stub.before = stripe_is_down
    for _ in range(outbox.MAX_ATTEMPTS):
        outbox.deliver(now=timezone.now() + timedelta(days=1))
    message.refresh_from_db()
    assert (message.state, message.attempts) == ("failed", outbox.MAX_ATTEMPTS)

    stripe_stub.before = None
    assert outbox.retry(OutboxMessage.objects.all()) == 1
    call_command("billing_deliver_outbox")
    message.refresh_from_db()
    assert message.state == "delivered"
    assert len(invoice_items(stripe_stub)) == 1


def test_a_plan_with_a_meter_sends_meter_events(tenant, stripe_stub):
    services.plan_upsert(
        key="metered",
        name="Metered",
        quotas={"seo": 10},
        overage={"seo": "0"},
        stripe_meter_event="seo_overage",
    )
    message = overage_message(tenant)
    assert message.kind == "stripe_meter_event"

    assert outbox.deliver() == 1

    (sent,) = stripe_stub.calls("POST", "/v1/billing/meter_events")
    assert sent.params["event_name"] == "seo_overage"
    assert sent.params["payload"] == {"stripe_customer_id": "cus_over", "value": "3"}
    assert sent.params["identifier"] == message.key
