"""Usage alerts fire once per threshold and window, and outbound webhooks are signed."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from billing_app.conf import customer_id_json
from billing_app.customers import services as customers
from billing_app.cycles import selectors as cycles
from billing_app.cycles import services as cycles_services
from billing_app.models import OutboxMessage, UsageAlert
from billing_app.outbox import services as outbox
from billing_app.signals import usage_threshold_crossed
from billing_app.subscriptions import services as subscriptions
from billing_app.testutils import subscribe

from .factories import CustomerFactory
from .utils import bearer, in_parallel, post_json


@pytest.fixture
def crossings():
    """Every usage_threshold_crossed sent, as (customer id, primitive, threshold, usage,
    limit)."""
    seen = []
    lock = threading.Lock()

    def receive(sender, customer, primitive, threshold, usage, limit, window, **kwargs):
        with lock:
            seen.append((customer.pk, primitive, threshold, usage, limit))

    usage_threshold_crossed.connect(receive)
    yield seen
    usage_threshold_crossed.disconnect(receive)


def call_seo(token):
    return bearer(token).post("/demo/seo/").status_code


@pytest.mark.django_db
def test_each_threshold_fires_once_after_commit(
    crossings, customer, customer_token, django_capture_on_commit_callbacks
):
    subscribe(customer, quotas={"seo": 10})
    with django_capture_on_commit_callbacks(execute=True):
        statuses = [call_seo(customer_token) for _ in range(12)]

    assert statuses == [200] * 10 + [429] * 2
    assert crossings == [(customer.pk, "seo", 0.8, 8, 10), (customer.pk, "seo", 1.0, 10, 10)]
    assert UsageAlert.objects.count() == 2


@pytest.mark.django_db
def test_nothing_is_sent_before_commit(crossings, customer, customer_token):
    subscribe(customer, quotas={"seo": 1})
    call_seo(customer_token)  # the test's transaction never commits
    assert crossings == []
    assert UsageAlert.objects.count() == 2  # claimed, to be sent on commit


@pytest.mark.django_db
def test_a_window_without_quota_sends_nothing(
    crossings, customer, customer_token, django_capture_on_commit_callbacks
):
    subscribe(customer, quotas={"aeo": 1})
    with django_capture_on_commit_callbacks(execute=True):
        assert call_seo(customer_token) == 200
    assert crossings == []


@pytest.mark.django_db
def test_each_customer_and_window_has_its_own_alerts(
    crossings, customer, customer_token, django_capture_on_commit_callbacks
):
    other = CustomerFactory()
    subscribe(customer, quotas={"seo": 1})
    subscribe(other, quotas={"seo": 1})
    with django_capture_on_commit_callbacks(execute=True):
        call_seo(customer_token)
        call_seo(customers.tenant_token_issue(customer=other)[1])

    assert sorted(c[2] for c in crossings if c[0] == customer.pk) == [0.8, 1.0]
    assert sorted(c[2] for c in crossings if c[0] == other.pk) == [0.8, 1.0]


@pytest.mark.parametrize(
    "transactional",
    [
        pytest.param(True, marks=pytest.mark.django_db(transaction=True), id="autocommit"),
        pytest.param(False, marks=pytest.mark.django_db, id="in-a-transaction"),
    ],
)
@pytest.mark.parametrize("path", ["/test/seo-answer/", "/test/reports/"], ids=["metered", "drf"])
def test_a_failed_call_crosses_nothing_and_the_call_that_does_alerts(
    crossings, customer, customer_token, django_capture_on_commit_callbacks, transactional, path
):
    """A failed call's usage is refunded: alerting on it would tell of usage that never
    happened, and leave the threshold claimed when it really is crossed."""
    subscribe(customer, quotas={"seo": 1})
    client = bearer(customer_token)
    client.raise_request_exception = False

    with django_capture_on_commit_callbacks(execute=True):
        assert post_json(client, path, {"fail": "status"}).status_code == 503
        assert post_json(client, path, {"fail": "exception"}).status_code == 500
    assert crossings == []
    assert not UsageAlert.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        assert post_json(client, path).status_code == 200
    assert crossings == [(customer.pk, "seo", 0.8, 1, 1), (customer.pk, "seo", 1.0, 1, 1)]


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_calls_cross_each_threshold_once(crossings):
    for _ in range(3):
        crossings.clear()
        customer = CustomerFactory()
        subscribe(customer, quotas={"seo": 10})
        token = customers.tenant_token_issue(customer=customer)[1]

        statuses = in_parallel(lambda i: call_seo(token), 50)

        assert statuses.count(200) == 10
        assert sorted(c[2] for c in crossings) == [0.8, 1.0]
        assert {c[0] for c in crossings} == {customer.pk}
        assert UsageAlert.objects.filter(customer_id=customer.pk).count() == 2


# --- outbound webhooks ------------------------------------------------------------------


@pytest.fixture
def operator_endpoint(settings):
    """The operator's webhook URL: a loopback server that keeps what it receives."""
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.BILLING_WEBHOOK_URL = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    settings.BILLING_WEBHOOK_SECRET = "whsec_operator"
    yield received
    server.shutdown()


def verify(headers, body, secret="whsec_operator"):
    parts = dict(part.split("=", 1) for part in headers["Billing-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(parts["v1"], expected.hexdigest())


@pytest.mark.django_db
def test_threshold_webhook_is_signed_and_sent_once(operator_endpoint, customer, customer_token):
    subscribe(customer, quotas={"seo": 5})
    for _ in range(5):
        call_seo(customer_token)

    assert outbox.deliver() >= 2
    assert outbox.deliver() == 0

    events = [json.loads(body) for _, body in operator_endpoint]
    crossed = [e for e in events if e["type"] == "usage.threshold_crossed"]
    assert [e["data"]["threshold"] for e in crossed] == [0.8, 1.0]
    assert [e["data"]["usage"] for e in crossed] == [4, 5]
    # A JSON number for an integer key, a string for a UUID.
    assert crossed[0]["data"]["customerId"] == customer_id_json(customer.pk)
    assert all(verify(headers, body) for headers, body in operator_endpoint)
    assert not verify(*operator_endpoint[0], secret="whsec_wrong")


@pytest.mark.django_db
def test_subscription_and_cycle_webhooks(operator_endpoint, customer):
    subscription = subscribe(customer, quotas={"seo": 5})
    subscriptions.subscription_set(
        customer=customer, plan_key=subscription.plan.key, status="canceled"
    )

    kinds = sorted(m.payload["type"] for m in OutboxMessage.objects.filter(kind="webhook"))
    assert kinds == ["subscription.updated", "subscription.updated"]
    # The ended period is recorded by the scheduler's run, not by the cancellation.
    assert len(cycles_services.records_close()) == 1
    kinds = sorted(m.payload["type"] for m in OutboxMessage.objects.filter(kind="webhook"))
    assert kinds == ["cycle.closed", "subscription.updated", "subscription.updated"]

    outbox.deliver()
    assert len(operator_endpoint) == 3
    closed = next(json.loads(b) for _, b in operator_endpoint if b"cycle.closed" in b)
    assert closed["data"]["status"] == "final"
    assert closed["data"]["customerId"] == customer_id_json(customer.pk)
    assert cycles.record_current(customer=customer) is None


@pytest.mark.django_db
def test_no_webhook_url_no_messages(customer, customer_token):
    subscribe(customer, quotas={"seo": 1})
    call_seo(customer_token)
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_batch_ingestion_sends_the_thresholds_it_crosses(
    api, crossings, customer, django_capture_on_commit_callbacks
):
    subscribe(customer, quotas={"seo": 10})
    events = [
        {"userId": customer_id_json(customer.pk), "primitive": "seo", "quantity": 3}
        for _ in range(3)
    ]
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/v1/usage/events", {"events": events}, format="json").status_code == 200
        api.post("/v1/usage/events", {"events": events[:1]}, format="json")

    assert crossings == [(customer.pk, "seo", 0.8, 9, 10), (customer.pk, "seo", 1.0, 12, 10)]
