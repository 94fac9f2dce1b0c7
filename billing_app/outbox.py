"""The outbox: messages to Stripe and to the operator, written in the transaction that
decided them and delivered afterwards, with retries.

Delivery locks one message at a time (``SKIP LOCKED``, so workers share the queue), sends
it with the message's deterministic key as the idempotency key, and marks it delivered in
the same transaction. A crash after Stripe answered and before the commit leaves the
message pending; the retry sends the same key and Stripe answers the first result again,
so nothing is billed twice and nothing is dropped. Stripe keeps idempotency keys for at
least 24 hours; the retries here end well within that.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.request
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import stripe
from django.db import transaction
from django.utils import timezone

from .conf import billing_settings
from .models import OutboxMessage, PlanQuota, Subscription, UsageRecord

logger = logging.getLogger(__name__)

Kind = OutboxMessage.Kind
State = OutboxMessage.State
MAX_ATTEMPTS = 8


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, ... at most 1 hour: eight attempts within about 3 hours."""
    return timedelta(seconds=min(3600, 30 * 2 ** (attempts - 1)))


# --- writing (inside the deciding transaction) -----------------------------------------


def overage_charges(record: UsageRecord) -> list[OutboxMessage]:
    """The Stripe charges of a closed record's billed overage: an invoice item per
    primitive, or meter events where the plan names a Stripe meter. Idempotent."""
    subscription = Subscription.objects.filter(user_id=record.user_id).first()
    customer = subscription.stripe_customer_id if subscription else ""
    plan = record.plan
    prices = {
        quota.primitive: quota.overage_unit_price
        for quota in plan.quotas.all()
        if quota.overage == PlanQuota.Overage.BILL
    }
    messages = []
    for primitive, entry in sorted(record.usage.items()):
        over = entry.get("overage", 0)
        if primitive not in prices or over <= 0:
            continue
        if not customer:
            logger.warning(
                "Overage of user %s (%s x %s) not billed: no Stripe customer.",
                record.user_id,
                over,
                primitive,
            )
            continue
        key = f"billing-overage-{record.pk}-{primitive}"
        if plan.stripe_meter_event:
            kind, payload = (
                Kind.STRIPE_METER_EVENT,
                {
                    "event_name": plan.stripe_meter_event,
                    "identifier": key,
                    "timestamp": int(record.cycle_end.timestamp()) - 1,
                    "payload": {"stripe_customer_id": customer, "value": str(over)},
                },
            )
        else:
            kind, payload = (
                Kind.STRIPE_INVOICE_ITEM,
                {
                    "customer": customer,
                    "currency": plan.currency,
                    "quantity": over,
                    "unit_amount_decimal": f"{Decimal(prices[primitive]).normalize():f}",
                    "description": (
                        f"{primitive}: {over} over the quota of {entry['quota']}, "
                        f"{record.cycle_start:%Y-%m-%d} to {record.cycle_end:%Y-%m-%d}"
                    ),
                    "period": {
                        "start": int(record.cycle_start.timestamp()),
                        "end": int(record.cycle_end.timestamp()),
                    },
                    "metadata": {"billing_record": str(record.pk), "primitive": primitive},
                },
            )
        message, _ = OutboxMessage.objects.get_or_create(
            key=key, defaults={"kind": kind, "payload": payload}
        )
        messages.append(message)
    return messages


def webhook(event_type: str, *, key: str, data: dict[str, Any]) -> OutboxMessage | None:
    """An outbound webhook to ``BILLING_WEBHOOK_URL``, when one is set."""
    if not billing_settings.WEBHOOK_URL:
        return None
    payload = {"id": key, "type": event_type, "created": int(time.time()), "data": data}
    message, _ = OutboxMessage.objects.get_or_create(
        key=key, defaults={"kind": Kind.WEBHOOK, "payload": payload}
    )
    return message


def signature(body: bytes, secret: str, timestamp: int) -> str:
    """``t=<timestamp>,v1=<HMAC-SHA256 of "<timestamp>.<body>">``, as Stripe signs."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


# --- delivering ------------------------------------------------------------------------


def deliver(*, limit: int = 100, now: datetime | None = None) -> int:
    """Deliver up to ``limit`` due messages; answers how many were delivered."""
    delivered = 0
    for _ in range(limit):
        with transaction.atomic():
            message = (
                OutboxMessage.objects.select_for_update(skip_locked=True)
                .filter(state=State.PENDING, next_attempt_at__lte=now or timezone.now())
                .order_by("next_attempt_at", "pk")
                .first()
            )
            if message is None:
                break
            try:
                answer = send(message)
            except Exception as error:  # any failure is retried; the reason is kept
                _failed(message, error)
                continue
            _delivered(message, answer)
            delivered += 1
    return delivered


def send(message: OutboxMessage) -> Any:
    from .stripe_sync import api_key

    if message.kind == Kind.STRIPE_INVOICE_ITEM:
        return stripe.InvoiceItem.create(
            **message.payload, idempotency_key=message.key, api_key=api_key()
        )
    if message.kind == Kind.STRIPE_METER_EVENT:
        return stripe.billing.MeterEvent.create(
            **message.payload, idempotency_key=message.key, api_key=api_key()
        )
    if message.kind == Kind.WEBHOOK:
        return _post_webhook(message)
    raise ValueError(f"Unknown outbox message kind {message.kind!r}")


def _post_webhook(message: OutboxMessage) -> dict[str, Any]:
    body = json.dumps(message.payload, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "Billing-Signature": signature(body, billing_settings.WEBHOOK_SECRET, int(time.time())),
        "Idempotency-Key": message.key,
    }
    request = urllib.request.Request(
        billing_settings.WEBHOOK_URL, data=body, headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return {"id": message.key, "object": "webhook", "status": response.status}


def _delivered(message: OutboxMessage, answer: Any) -> None:
    message.state = State.DELIVERED
    message.delivered_at = timezone.now()
    message.attempts += 1
    message.answer = {"id": answer["id"], "object": answer["object"]}
    message.last_error = ""
    message.save()


def _failed(message: OutboxMessage, error: Exception) -> None:
    message.attempts += 1
    message.last_error = f"{type(error).__name__}: {error}"[:2000]
    if message.attempts >= MAX_ATTEMPTS:
        message.state = State.FAILED
        logger.error("Outbox message %s failed for good: %s", message.key, message.last_error)
    else:
        message.next_attempt_at = timezone.now() + backoff(message.attempts)
    message.save()


def retry(messages: Any) -> int:
    """Send failed or pending messages again at once (the admin's action)."""
    return messages.exclude(state=State.DELIVERED).update(
        state=State.PENDING, next_attempt_at=timezone.now(), attempts=0
    )
