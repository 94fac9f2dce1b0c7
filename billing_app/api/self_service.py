"""Tenant self-service (``/billing/``): a tenant's own subscription, usage and invoices,
and the ways to change them through Stripe. Authenticated as the tenant (a tenant token or
the host project's session), or by an operator key that names the tenant in
``X-Billing-User``. Also the Stripe webhook endpoint."""

from __future__ import annotations

import json
import logging
import os
import re
from traceback import format_exc
from typing import Any

import stripe
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from djstripe.models import WebhookEventTrigger
from djstripe.models.webhooks import get_remote_ip
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from .. import enforcement, selectors, stripe_sync
from ..conf import billing_settings
from ..exceptions import NotFound
from ..periods import Window, label
from . import serializers as s
from .views import BillingAPIView, Pagination, extend_schema

logger = logging.getLogger(__name__)


class TenantAPIView(BillingAPIView):
    """Answers for one tenant only: the one the request authenticates as."""

    permission_classes = [AllowAny]  # resolve_tenant refuses anyone else

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        self.tenant = enforcement.resolve_tenant(request)


class SubscriptionView(TenantAPIView):
    @extend_schema(responses=s.SelfSubscriptionSerializer)
    def get(self, request: Request) -> Response:
        subscription = selectors.subscription_get(user=self.tenant)
        if subscription is None:
            raise NotFound("You have no subscription.")
        return Response(s.SelfSubscriptionSerializer(subscription).data)


def _key(primitive: str) -> str:
    """``llm.tokens`` -> ``llmTokens``, as the contract names usage keys."""
    head, *rest = re.split(r"[._-]", primitive)
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class UsageView(TenantAPIView):
    @extend_schema(responses=s.SelfUsageSerializer)
    def get(self, request: Request) -> Response:
        rollup = selectors.usage_rollup(user=self.tenant)
        kit = selectors.kit_of(user=self.tenant)
        primitives = sorted(
            {*rollup.quotas, *rollup.usage, *(p.primitive for p in kit.primitives.all())}
            if kit
            else {*rollup.quotas, *rollup.usage}
        )
        usage: dict[str, int | None] = {}
        for primitive in primitives:
            usage[_key(primitive)] = rollup.usage.get(primitive, 0)
            usage[_key(primitive) + "Limit"] = rollup.quotas.get(primitive)
        window = Window(rollup.period_start, rollup.period_end)
        body = {
            "period": label(rollup.period, window, billing_settings.TIME_ZONE),
            "period_start": rollup.period_start,
            "period_end": rollup.period_end,
            "usage": usage,
        }
        return Response(s.SelfUsageSerializer(body).data)


class InvoicePagination(Pagination):
    key = "invoices"
    ordering = ("-created", "-djstripe_id")


class InvoicesView(TenantAPIView):
    @extend_schema(responses=s.InvoiceListSerializer)
    def get(self, request: Request) -> Response:
        paginator = InvoicePagination()
        page = paginator.paginate_queryset(selectors.invoices_of(user=self.tenant), request, self)
        return paginator.get_paginated_response(s.InvoiceSerializer(page, many=True).data)


class CheckoutView(TenantAPIView):
    @extend_schema(request=s.CheckoutInputSerializer, responses=s.RedirectSerializer)
    def post(self, request: Request) -> Response:
        data = self.parse(s.CheckoutInputSerializer, request.data)
        return Response({"url": stripe_sync.checkout_create(user=self.tenant, **data)})


class PortalView(TenantAPIView):
    @extend_schema(request=s.PortalInputSerializer, responses=s.RedirectSerializer)
    def post(self, request: Request) -> Response:
        data = self.parse(s.PortalInputSerializer, request.data)
        return Response({"url": stripe_sync.portal_create(user=self.tenant, **data)})


class CancelView(TenantAPIView):
    @extend_schema(request=s.CancelInputSerializer, responses=s.CancelSerializer)
    def post(self, request: Request) -> Response:
        data = self.parse(s.CancelInputSerializer, request.data)
        return Response(s.cancel_answer(stripe_sync.subscription_cancel(user=self.tenant, **data)))


# The Stripe webhook endpoint. Not a DRF view: the signature is over the raw body.


def webhook_secret() -> str:
    return getattr(settings, "STRIPE_WEBHOOK_SECRET", "") or os.environ.get(
        "STRIPE_WEBHOOK_SECRET", ""
    )


@csrf_exempt
@require_POST
@transaction.non_atomic_requests
def webhook(request: HttpRequest) -> JsonResponse:
    """Verify Stripe's signature with ``STRIPE_WEBHOOK_SECRET``, then hand the event to
    dj-stripe, which stores it, re-fetches its object and sends the signals our receivers
    listen to. A receiver's error rolls the event back and answers 500: Stripe retries."""
    secret = webhook_secret()
    if not secret:
        logger.error("STRIPE_WEBHOOK_SECRET is not set: Stripe webhooks cannot be verified.")
        return JsonResponse({"error": "not_configured"}, status=503)
    try:
        payload = request.body.decode("utf-8")
        stripe.WebhookSignature.verify_header(
            payload, request.headers.get("Stripe-Signature", ""), secret, tolerance=300
        )
        event = json.loads(payload)
        if not isinstance(event, dict) or not {"id", "type", "data"} <= event.keys():
            raise ValueError("not an event")
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError) as error:
        return JsonResponse({"error": "invalid_webhook", "message": str(error)}, status=400)

    trigger = WebhookEventTrigger.objects.create(
        remote_ip=get_remote_ip(request), headers=dict(request.headers), body=payload, valid=True
    )
    try:
        with transaction.atomic():
            trigger.process(save=False, api_key=stripe_sync.api_key())
    except Exception as error:
        trigger.exception = str(error)[:128]
        trigger.traceback = format_exc()
        trigger.save()
        logger.exception(
            "Stripe event %s (%s) failed; Stripe will retry.", event["id"], event["type"]
        )
        return JsonResponse({"error": "processing_failed", "event": event["id"]}, status=500)
    trigger.save()
    return JsonResponse({"received": True, "event": event["id"]})
