"""Overage: soft quotas let calls through, and a closed period's excess becomes exactly one
Stripe charge per billed primitive, written to the outbox with the record, and delivered
from there exactly once across retries and crashes."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from billing_app.catalog import services as catalog
from billing_app.cycles import services as closer
from billing_app.metering import services as metering
from billing_app.models import OutboxMessage, UsageRecord
from billing_app.outbox import services as outbox
from billing_app.periods import add_months
from billing_app.subscriptions import services as subscriptions

from .utils import use

pytestmark = pytest.mark.django_db


@pytest.fixture
def metered_plan(db):
    # Half a cent per seo call past 10; aeo blocks at 5.
    return catalog.plan_upsert(
        key="metered", name="Metered", quotas={"seo": 10, "aeo": 5}, overage={"seo": "0.5"}
    )[0]


def on_stripe(customer, stripe_customer="cus_over", days_ago=40):
    """Subscribed with a Stripe customer, in a month-long period that has ended."""
    start = timezone.now() - timedelta(days=days_ago)
    subscriptions.subscription_set(
        customer=customer,
        plan_key="metered",
        stripe_customer_id=stripe_customer,
        current_period_start=start,
        current_period_end=add_months(start, 1),
    )
    return start


def test_a_billed_quota_lets_calls_through_and_a_blocking_one_refuses(
    metered_plan, customer, customer_token, client
):
    subscriptions.subscription_set(customer=customer, plan_key="metered")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {customer_token}"}

    seo = [client.post("/demo/seo/", **auth).status_code for _ in range(12)]
    aeo = [client.post("/demo/aeo/", **auth).status_code for _ in range(6)]

    assert seo == [200] * 12
    assert aeo == [200] * 5 + [429]
    assert metering.usage_check(customer_id=customer.pk, primitive="seo").allowed is True
    assert metering.usage_check(customer_id=customer.pk, primitive="aeo").allowed is False


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


def test_closing_writes_one_invoice_item_per_billed_primitive_once(metered_plan, customer):
    start = on_stripe(customer)
    use(customer, 15, start + timedelta(days=6))
    use(customer, 8, start + timedelta(days=6), primitive="aeo")  # over, but not billed

    (record,) = closer.records_close()
    closer.records_close()  # again: nothing more

    (message,) = OutboxMessage.objects.all()
    assert message.kind == "stripe_invoice_item" and message.state == "pending"
    assert message.key == f"billing-overage-{record.pk}-seo"
    assert message.payload["customer"] == "cus_over"
    assert message.payload["quantity"] == 5
    assert message.payload["unit_amount_decimal"] == "0.5"
    assert message.payload["currency"] == "usd"
    assert message.payload["period"] == {
        "start": int(record.period.start.timestamp()),
        "end": int(record.period.end.timestamp()),
    }
    assert message.payload["metadata"] == {
        "billing_record": str(record.pk),
        "billing_period": str(record.pk),
        "primitive": "seo",
    }


def test_no_overage_no_charge(metered_plan, customer):
    start = on_stripe(customer)
    use(customer, 10, start + timedelta(days=6))  # exactly the quota
    (record,) = closer.records_close()
    assert record.usage["seo"] == {"used": 10, "quota": 10, "overage": 0}
    assert not OutboxMessage.objects.exists()


def test_no_stripe_customer_no_charge(metered_plan, customer, caplog):
    start = on_stripe(customer, stripe_customer="")
    use(customer, 15, start + timedelta(days=6))
    closer.records_close()
    assert not OutboxMessage.objects.exists()
    assert UsageRecord.objects.get(status="recorded").usage["seo"]["overage"] == 5
    assert "no Stripe customer" in caplog.text


def test_a_plan_with_a_meter_writes_meter_events(customer):
    catalog.plan_upsert(
        key="metered",
        name="Metered",
        quotas={"seo": 10},
        overage={"seo": "0"},
        stripe_meter_event="seo_overage",
    )
    start = on_stripe(customer)
    use(customer, 13, start + timedelta(days=6))

    (record,) = closer.records_close()

    (message,) = OutboxMessage.objects.all()
    assert message.kind == "stripe_meter_event"
    assert message.payload == {
        "event_name": "seo_overage",
        "identifier": f"billing-overage-{record.pk}-seo",
        # Inside the period, so Stripe bills it with that period.
        "timestamp": int(record.period.end.timestamp()) - 1,
        "payload": {"stripe_customer_id": "cus_over", "value": "3"},
    }


# --- delivery through the outbox ------------------------------------------------------------


def overage_message(customer, stripe_stub):
    """The one charge of a closed period: 3 seo calls over the quota of 10, for a customer
    Stripe has."""
    stripe_stub.customer(id="cus_over")
    start = on_stripe(customer)
    use(customer, 13, start + timedelta(days=6))
    closer.records_close()
    return OutboxMessage.objects.get()


def invoice_items(stripe_stub):
    return [o for o in stripe_stub.objects.values() if o["object"] == "invoiceitem"]


def test_delivery_sends_the_invoice_item_with_its_idempotency_key(
    metered_plan, customer, stripe_stub
):
    message = overage_message(customer, stripe_stub)

    assert outbox.deliver() == 1
    assert outbox.deliver() == 0

    (sent,) = stripe_stub.calls("POST", "/v1/invoiceitems")
    assert sent.headers["idempotency-key"] == message.key
    assert sent.params["customer"] == "cus_over"
    assert sent.params["quantity"] == "3"
    assert sent.params["unit_amount_decimal"] == "0.5"
    message.refresh_from_db()
    assert (message.state, message.attempts, message.last_error) == ("delivered", 1, "")
    assert message.answer["id"].startswith("ii_")
    assert len(invoice_items(stripe_stub)) == 1


@pytest.mark.django_db(transaction=True)
def test_delivery_claims_under_a_lease_and_sends_outside_any_transaction(
    metered_plan, customer, stripe_stub, monkeypatch
):
    message = overage_message(customer, stripe_stub)
    real = outbox.send
    sends = []

    def send(claimed):
        sends.append(connection.in_atomic_block)
        # The claim has committed: another worker now finds the message leased.
        leased = OutboxMessage.objects.get(pk=claimed.pk)
        assert leased.attempts == 1
        assert leased.next_attempt_at > timezone.now() + outbox.LEASE - timedelta(seconds=30)
        assert outbox.deliver() == 0
        return real(claimed)

    monkeypatch.setattr(outbox, "send", send)
    assert outbox.deliver() == 1

    assert sends == [False]
    assert len(stripe_stub.calls("POST", "/v1/invoiceitems")) == 1
    message.refresh_from_db()
    assert message.state == "delivered"


def test_an_answer_lost_on_the_way_is_retried_without_billing_twice(
    metered_plan, customer, stripe_stub
):
    message = overage_message(customer, stripe_stub)

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
    assert len(stripe_stub.calls("POST", "/v1/invoiceitems")) == 2


def test_a_crash_between_stripes_answer_and_marking_delivered_never_bills_twice(
    metered_plan, customer, stripe_stub, monkeypatch
):
    message = overage_message(customer, stripe_stub)
    real = outbox._delivered

    def crash(message, answer):
        raise SystemExit("the worker died after Stripe answered")

    monkeypatch.setattr(outbox, "_delivered", crash)
    with pytest.raises(SystemExit):
        outbox.deliver()
    message.refresh_from_db()
    assert (message.state, message.attempts) == ("pending", 1)
    assert outbox.deliver() == 0  # leased still: the dead worker might be sending it

    monkeypatch.setattr(outbox, "_delivered", real)
    assert outbox.deliver(now=message.next_attempt_at) == 1  # the lease ran out

    assert len(invoice_items(stripe_stub)) == 1  # Stripe replayed its first answer
    sent = stripe_stub.calls("POST", "/v1/invoiceitems")
    assert [r.headers["idempotency-key"] for r in sent] == [message.key, message.key]
    message.refresh_from_db()
    assert message.state == "delivered"
    assert message.answer["id"] == invoice_items(stripe_stub)[0]["id"]


def test_failures_back_off_then_end_in_failed_and_the_admin_can_retry(
    metered_plan, customer, stripe_stub
):
    message = overage_message(customer, stripe_stub)

    def stripe_is_down(request):
        raise RuntimeError("Stripe is down")

    stripe_stub.before = stripe_is_down
    for attempt in range(1, outbox.MAX_ATTEMPTS + 1):
        due = message.next_attempt_at
        assert outbox.deliver(now=due - timedelta(microseconds=1)) == 0
        message.refresh_from_db()
        assert message.attempts == attempt - 1  # not due yet: not tried
        failed_at = timezone.now()
        assert outbox.deliver(limit=1, now=due) == 0
        message.refresh_from_db()
        assert message.attempts == attempt
        if attempt < outbox.MAX_ATTEMPTS:
            assert message.state == "pending"
            wait = message.next_attempt_at - failed_at
            assert outbox.backoff(attempt) <= wait < outbox.backoff(attempt) + timedelta(seconds=5)
    assert message.state == "failed" and "Stripe is down" in message.last_error
    assert [outbox.backoff(n).total_seconds() for n in (1, 2, 3, 8, 20)] == [
        30,
        60,
        120,
        3600,
        3600,
    ]
    assert outbox.deliver(now=timezone.now() + timedelta(days=30)) == 0  # failed is final

    stripe_stub.before = None
    assert outbox.messages_retry(OutboxMessage.objects.all()) == 1
    call_command("billing_deliver_outbox", stderr=io.StringIO())
    message.refresh_from_db()
    assert message.state == "delivered"
    assert len(invoice_items(stripe_stub)) == 1


def test_a_message_that_keeps_failing_never_blocks_the_ones_behind_it(db, stripe_stub):
    payload = {"currency": "usd", "quantity": 1, "unit_amount_decimal": "1", "description": "x"}
    stuck = [
        outbox.message_add(
            kind="stripe_invoice_item",
            key=f"stuck-{n}",
            payload={**payload, "customer": "cus_broken"},
        )
        for n in range(outbox.CLAIM_BATCH + 5)  # more than one claim's worth
    ]
    stripe_stub.customer(id="cus_fine")
    good = outbox.message_add(
        kind="stripe_invoice_item", key="good", payload={**payload, "customer": "cus_fine"}
    )
    long_ago = timezone.now() - timedelta(hours=1)
    OutboxMessage.objects.filter(key__startswith="stuck-").update(next_attempt_at=long_ago)

    def refuse_the_broken_one(request):
        if request.params.get("customer") == "cus_broken":
            raise RuntimeError("No such customer: cus_broken")

    stripe_stub.before = refuse_the_broken_one
    assert outbox.deliver() == 1

    good.refresh_from_db()
    assert good.state == "delivered"
    states = set(
        OutboxMessage.objects.filter(key__startswith="stuck-").values_list("state", "attempts")
    )
    assert states == {("pending", 1)}
    # Backing off: the next run does not try them again at once.
    tried = len(stripe_stub.requests)
    assert outbox.deliver() == 0
    assert len(stripe_stub.requests) == tried
    assert len(stuck) == outbox.CLAIM_BATCH + 5


def test_a_plan_with_a_meter_sends_meter_events(customer, stripe_stub):
    catalog.plan_upsert(
        key="metered",
        name="Metered",
        quotas={"seo": 10},
        overage={"seo": "0"},
        stripe_meter_event="seo_overage",
    )
    message = overage_message(customer, stripe_stub)

    assert outbox.deliver() == 1

    (sent,) = stripe_stub.calls("POST", "/v1/billing/meter_events")
    assert sent.params["event_name"] == "seo_overage"
    assert sent.params["payload"] == {"stripe_customer_id": "cus_over", "value": "3"}
    assert sent.params["identifier"] == message.key
    assert sent.headers["idempotency-key"] == message.key


def test_a_meter_event_answer_without_an_id_is_delivered_and_keeps_its_identifier(
    customer, stripe_stub
):
    catalog.plan_upsert(
        key="metered",
        name="Metered",
        quotas={"seo": 10},
        overage={"seo": "0"},
        stripe_meter_event="seo_overage",
    )
    message = overage_message(customer, stripe_stub)

    def answer_as_stripe_does(request, status, body):
        if request.path == "/v1/billing/meter_events":
            body.pop("id", None)  # Stripe's meter events have an identifier, not an id

    stripe_stub.after = answer_as_stripe_does
    assert outbox.deliver() == 1

    message.refresh_from_db()
    assert message.state == "delivered"
    assert message.answer == {"object": "billing.meter_event", "identifier": message.key}
    assert outbox.deliver(now=timezone.now() + timedelta(days=1)) == 0


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_workers_delivering_at_once_send_each_message_once(db, stripe_stub):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    payload = {"currency": "usd", "quantity": 1, "unit_amount_decimal": "1", "customer": "cus_x"}
    stripe_stub.customer(id="cus_x")
    keys = [f"charge-{n}" for n in range(60)]
    for key in keys:
        outbox.message_add(kind="stripe_invoice_item", key=key, payload=payload)
    barrier = threading.Barrier(6)

    def worker(_):
        barrier.wait()
        try:
            return outbox.deliver()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=6) as pool:
        delivered = sum(pool.map(worker, range(6)))

    assert delivered == len(keys)
    sent = [r.headers["idempotency-key"] for r in stripe_stub.calls("POST", "/v1/invoiceitems")]
    assert sorted(sent) == sorted(keys)  # each sent once: no worker claimed another's
    assert set(OutboxMessage.objects.values_list("state", "attempts")) == {("delivered", 1)}
