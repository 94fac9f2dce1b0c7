"""The only writer of :class:`OutboxMessage`.

Writing happens inside the deciding transaction (a closed billing period and its charge
commit together, or neither does). Delivery claims due messages in a short transaction by
moving their ``next_attempt_at`` past the lease, sends each outside any transaction with
the message's deterministic key as its idempotency key, and records the outcome after. A
worker that dies mid-send leaves the message to be claimed again when its lease ends; the
retry sends the same key, and Stripe answers its first result, so nothing is billed twice
and nothing is dropped. A message that keeps failing backs off and never holds up the
others. Stripe keeps idempotency keys for at least 24 hours; the retries end well within.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.request
from datetime import datetime, timedelta
from typing import Any

import stripe
from django.db import transaction
from django.utils import timezone

from ..conf import billing_settings, stripe_api_key
from ..models import OutboxMessage

logger = logging.getLogger(__name__)

Kind = OutboxMessage.Kind
State = OutboxMessage.State
MAX_ATTEMPTS = 8
# Longer than any send may take (the webhook timeout is 10 s, Stripe's 80 s): a claimed
# message is not claimed again while its sender may still be working on it.
LEASE = timedelta(minutes=2)
CLAIM_BATCH = 20


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, ... at most 1 hour: eight attempts within about 3 hours."""
    return timedelta(seconds=min(3600, 30 * 2 ** (attempts - 1)))


# --- writing (inside the deciding transaction) -----------------------------------------


def message_add(*, kind: str, key: str, payload: dict[str, Any]) -> OutboxMessage:
    """Add a message once: the same key again is the same message."""
    # The due time from the app's clock (the model's default would bypass a test's
    # frozen clock: it holds the original function).
    message, _ = OutboxMessage.objects.get_or_create(
        key=key, defaults={"kind": kind, "payload": payload, "next_attempt_at": timezone.now()}
    )
    return message


def webhook_add(event_type: str, *, key: str, data: dict[str, Any]) -> OutboxMessage | None:
    """An outbound webhook to ``BILLING_WEBHOOK_URL``, when one is set."""
    if not billing_settings.WEBHOOK_URL:
        return None
    payload = {"id": key, "type": event_type, "created": int(time.time()), "data": data}
    return message_add(kind=Kind.WEBHOOK, key=key, payload=payload)


def messages_retry(messages: Any) -> int:
    """Send failed or pending messages again at once (the admin's action)."""
    return messages.exclude(state=State.DELIVERED).update(
        state=State.PENDING, next_attempt_at=timezone.now(), attempts=0
    )


def signature(body: bytes, secret: str, timestamp: int) -> str:
    """``t=<timestamp>,v1=<HMAC-SHA256 of "<timestamp>.<body>">``, as Stripe signs."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


# --- delivering (outside any transaction) ----------------------------------------------


def deliver(*, limit: int = 100, now: datetime | None = None) -> int:
    """Deliver up to ``limit`` due messages; answers how many were delivered."""
    delivered = 0
    claimed_so_far = 0
    while claimed_so_far < limit:
        batch = _claim(min(CLAIM_BATCH, limit - claimed_so_far), now or timezone.now())
        if not batch:
            break
        claimed_so_far += len(batch)
        for message in batch:
            try:
                answer = send(message)
            except Exception as error:  # any failure is retried; the reason is kept
                _failed(message, error)
            else:
                delivered += _delivered(message, answer)
    return delivered


def _claim(count: int, now: datetime) -> list[OutboxMessage]:
    with transaction.atomic():
        due = list(
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(state=State.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at", "pk")[:count]
        )
        for message in due:
            message.attempts += 1
            message.next_attempt_at = timezone.now() + LEASE
        OutboxMessage.objects.bulk_update(due, ["attempts", "next_attempt_at"])
    return due


def send(message: OutboxMessage) -> Any:
    if message.kind == Kind.STRIPE_INVOICE_ITEM:
        return stripe.InvoiceItem.create(
            **message.payload, idempotency_key=message.key, api_key=stripe_api_key()
        )
    if message.kind == Kind.STRIPE_METER_EVENT:
        return stripe.billing.MeterEvent.create(
            **message.payload, idempotency_key=message.key, api_key=stripe_api_key()
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
        return {"object": "webhook", "status": response.status}


def _summary(answer: Any) -> dict[str, Any]:
    """What to keep of an answer: its identifying fields, whichever the object has (a
    Stripe meter event has no ``id``, only an ``identifier``)."""
    keys = ("id", "object", "identifier", "status")
    return {key: answer[key] for key in keys if key in answer}


def _delivered(message: OutboxMessage, answer: Any) -> int:
    return OutboxMessage.objects.filter(
        pk=message.pk, state=State.PENDING, attempts=message.attempts
    ).update(
        state=State.DELIVERED,
        delivered_at=timezone.now(),
        answer=_summary(answer),
        last_error="",
        next_attempt_at=timezone.now(),
    )


def _failed(message: OutboxMessage, error: Exception) -> None:
    last_error = f"{type(error).__name__}: {error}"[:2000]
    changes: dict[str, Any] = {"last_error": last_error}
    if message.attempts >= MAX_ATTEMPTS:
        changes["state"] = State.FAILED
        logger.error("Outbox message %s failed for good: %s", message.key, last_error)
    else:
        changes["next_attempt_at"] = timezone.now() + backoff(message.attempts)
        logger.warning(
            "Outbox message %s failed (attempt %s): %s", message.key, message.attempts, last_error
        )
    OutboxMessage.objects.filter(
        pk=message.pk, state=State.PENDING, attempts=message.attempts
    ).update(**changes)
