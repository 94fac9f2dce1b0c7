"""Customer self-service (``/billing/``): a customer's own subscription, usage and
invoices, and the ways to change them through Stripe. Authenticated as the customer (a
tenant token, or the host project's session by ``BILLING_CUSTOMER_RESOLVER``), or by an
operator key that names the customer in ``X-Billing-Customer``."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from ..catalog.names import metric_names
from ..conf import billing_settings
from ..customers.resolvers import resolve_customer
from ..exceptions import NotFound
from ..metering.selectors import usage_rollup
from ..periods import label
from ..stripe import calls as stripe_calls
from ..subscriptions.selectors import invoices_of, subscription_get
from . import serializers as s
from .schema import PAGE_PARAMETERS, errors, extend_schema
from .views import BillingAPIView, Pagination, outside_transactions, upcoming_answer


class CustomerAPIView(BillingAPIView):
    """Answers for one customer only: the one the request authenticates as."""

    permission_classes = [AllowAny]  # resolve_customer refuses anyone else

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        self.customer = resolve_customer(request)


class SubscriptionView(CustomerAPIView):
    @extend_schema(responses=s.SelfSubscriptionSerializer)
    def get(self, request: Request) -> Response:
        subscription = subscription_get(customer=self.customer)
        if subscription is None:
            raise NotFound("You have no subscription.")
        return Response(s.SelfSubscriptionSerializer(subscription).data)


class UsageView(CustomerAPIView):
    @extend_schema(responses=s.SelfUsageSerializer)
    def get(self, request: Request) -> Response:
        rollup = usage_rollup(customer_id=self.customer.pk)
        counters, gauges = rollup.primitives(), rollup.gauges()
        usage: dict[str, int | None] = {}
        # Keys are the primitives' metric names (llm.tokens: llmTokens); a gauge shows its
        # level now (storage, storageLimit), a counter its usage in the window.
        for primitive, key in metric_names(counters + gauges).items():
            if primitive in gauges:
                usage[key] = rollup.levels.get(primitive, 0)
                usage[key + "Limit"] = rollup.level_limits.get(primitive)
            else:
                usage[key] = rollup.usage.get(primitive, 0)
                usage[key + "Limit"] = rollup.quotas.get(primitive)
        body = {
            "period": label(rollup.period, rollup.window, billing_settings.TIME_ZONE),
            "period_start": rollup.window.start,
            "period_end": rollup.window.end,
            "usage": usage,
        }
        return Response(s.SelfUsageSerializer(body).data)


class UpcomingView(CustomerAPIView):
    """Your open period's charges so far and as projected to its end."""

    @extend_schema(responses={200: s.UpcomingSerializer, **errors(404)})
    def get(self, request: Request) -> Response:
        return upcoming_answer(self.customer)


class InvoicePagination(Pagination):
    key = "invoices"
    ordering = ("-created", "-djstripe_id")


class InvoicesView(CustomerAPIView):
    @extend_schema(parameters=PAGE_PARAMETERS, responses=s.InvoiceListSerializer)
    def get(self, request: Request) -> Response:
        paginator = InvoicePagination()
        page = paginator.paginate_queryset(invoices_of(customer=self.customer), request, self)
        return paginator.get_paginated_response(s.InvoiceSerializer(page, many=True).data)


@outside_transactions
class CheckoutView(CustomerAPIView):
    @extend_schema(
        request=s.CheckoutInputSerializer,
        responses={200: s.RedirectSerializer, **errors(409, 502)},
    )
    def post(self, request: Request) -> Response:
        data = self.parse(s.CheckoutInputSerializer, request.data)
        return Response({"url": stripe_calls.checkout_create(customer=self.customer, **data)})


@outside_transactions
class PortalView(CustomerAPIView):
    @extend_schema(
        request=s.PortalInputSerializer,
        responses={200: s.RedirectSerializer, **errors(409, 502)},
    )
    def post(self, request: Request) -> Response:
        data = self.parse(s.PortalInputSerializer, request.data)
        return Response({"url": stripe_calls.portal_create(customer=self.customer, **data)})


@outside_transactions
class CancelView(CustomerAPIView):
    @extend_schema(
        request=s.CancelInputSerializer,
        responses={200: s.CancelSerializer, **errors(202, 409, 502)},
    )
    def post(self, request: Request) -> Response:
        data = self.parse(s.CancelInputSerializer, request.data)
        subscription = stripe_calls.subscription_cancel(customer=self.customer, **data)
        return Response(s.cancel_answer(subscription))


@outside_transactions
class ReactivateView(CustomerAPIView):
    @extend_schema(
        request=None, responses={200: s.SelfSubscriptionSerializer, **errors(202, 409, 502)}
    )
    def post(self, request: Request) -> Response:
        subscription = stripe_calls.subscription_reactivate(customer=self.customer)
        return Response(s.SelfSubscriptionSerializer(subscription).data)
