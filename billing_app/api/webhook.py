"""The Stripe webhook endpoint. Not a DRF view: the signature is over the raw body."""

from __future__ import annotations

import json
import logging
import os
import time
from traceback import format_exc

import stripe
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from djstripe.models import WebhookEventTrigger
from djstripe.models.webhooks import get_remote_ip

from ..conf import stripe_api_key
from ..exceptions import BillingError
from ..stripe.sync import event_apply

logger = logging.getLogger(__name__)

# Stripe's own tolerance: a signature more than five minutes old, or ahead, is refused.
TOLERANCE = 300


def webhook_secret() -> str:
    return getattr(settings, "STRIPE_WEBHOOK_SECRET", "") or os.environ.get(
        "STRIPE_WEBHOOK_SECRET", ""
    )


def _verify(payload: str, header: str, secret: str) -> dict:
    """Stripe's signature check, with its tolerance both ways (stripe-python refuses only
    old timestamps)."""
    stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=TOLERANCE)
    timestamp = next((part[2:] for part in header.split(",") if part.startswith("t=")), "")
    if not timestamp.isdigit() or int(timestamp) > time.time() + TOLERANCE:
        raise stripe.SignatureVerificationError("Timestamp ahead of the tolerance zone", header)
    event = json.loads(payload)
    if not isinstance(event, dict) or not {"id", "type", "data"} <= event.keys():
        raise ValueError("not an event")
    return event


@csrf_exempt
@require_POST
@transaction.non_atomic_requests
def webhook(request: HttpRequest) -> JsonResponse:
    """Verify Stripe's signature with ``STRIPE_WEBHOOK_SECRET``, let dj-stripe store the
    event and sync its copy, then apply the subscription it is about as Stripe holds it
    now, outside any transaction. Any failure answers 500 so Stripe retries; a retry of an
    event dj-stripe stored already is applied again (it is idempotent)."""
    secret = webhook_secret()
    if not secret:
        logger.error("STRIPE_WEBHOOK_SECRET is not set: Stripe webhooks cannot be verified.")
        return JsonResponse(
            {"error": "not_configured", "message": "STRIPE_WEBHOOK_SECRET is not set."},
            status=503,
        )
    try:
        payload = request.body.decode("utf-8")
        event = _verify(payload, request.headers.get("Stripe-Signature", ""), secret)
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError, RecursionError):
        return JsonResponse(
            {"error": "invalid_webhook", "message": "The signature or the body is not valid."},
            status=400,
        )

    trigger = WebhookEventTrigger.objects.create(
        remote_ip=get_remote_ip(request), headers=dict(request.headers), body=payload, valid=True
    )
    try:
        with transaction.atomic():
            trigger.process(save=False, api_key=stripe_api_key())
        trigger.save()
        event_apply(event)
    except (Exception, BillingError) as error:
        trigger.exception = str(error)[:128]
        trigger.traceback = format_exc()
        trigger.save()
        logger.exception(
            "Stripe event %s (%s) failed; Stripe will retry.", event["id"], event["type"]
        )
        return JsonResponse({"error": "processing_failed", "event": event["id"]}, status=500)
    return JsonResponse({"received": True, "event": event["id"]})


# Stripe carries no customer credentials: never counted by BILLING_METERED_PATHS.
webhook.billing_unmetered = True  # type: ignore[attr-defined]
