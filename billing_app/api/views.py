"""Operator API (``/v1/``). Each view parses, calls one service or selector, serializes."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import F
from django.utils.decorators import method_decorator
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..catalog import selectors as catalog_selectors
from ..catalog import services as catalog
from ..customers import selectors as customers_selectors
from ..customers import services as customers
from ..cycles import selectors as cycles
from ..exceptions import NotFound
from ..metering import selectors as metering_selectors
from ..metering import services as metering
from ..stripe import calls as stripe_calls
from ..subscriptions import selectors as subscriptions_selectors
from ..subscriptions import services as subscriptions
from ..subscriptions.licenses import license_check
from . import serializers as s
from .authentication import OperatorKeyAuthentication, TenantTokenAuthentication
from .errors import billing_exception_handler
from .parsers import StrictJSONParser
from .permissions import IsOperator
from .schema import PAGE_PARAMETERS, REFUSED_OR_FORBIDDEN, BillingAutoSchema, errors, extend_schema

# Stripe is called outside any database transaction, whatever ATOMIC_REQUESTS says.
outside_transactions = method_decorator(transaction.non_atomic_requests, name="dispatch")


class BillingAPIView(APIView):
    """Base of the app's views: its own authentication, schema and error format, so none of
    them depends on the host project's ``REST_FRAMEWORK`` settings."""

    authentication_classes = [
        OperatorKeyAuthentication,
        TenantTokenAuthentication,
        SessionAuthentication,
    ]
    parser_classes = [StrictJSONParser, FormParser, MultiPartParser]
    schema = BillingAutoSchema()
    # Never counted by BILLING_METERED_PATHS: reading one's usage must not use it up.
    billing_unmetered = True

    def get_exception_handler(self) -> Any:
        return billing_exception_handler

    @staticmethod
    def parse(serializer_class: type[s.serializers.Serializer], data: Any) -> dict[str, Any]:
        serializer = serializer_class(data=data)
        serializer.is_valid(raise_exception=True)
        return s.snake_case(dict(serializer.validated_data))


class OperatorAPIView(BillingAPIView):
    permission_classes = [IsOperator]


def _created(created: bool) -> int:
    return status.HTTP_201_CREATED if created else status.HTTP_200_OK


class PlanListView(OperatorAPIView):
    @extend_schema(responses=s.PlanSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(s.PlanSerializer(catalog_selectors.plan_list(), many=True).data)

    @extend_schema(
        request=s.PlanInputSerializer,
        responses={200: s.PlanSerializer, 201: s.PlanSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = s.PlanInputSerializer(data=request.data)
        if not serializer.is_valid():
            errors = dict(serializer.errors)
            # Prices nest lists in lists: their errors are named by path (prices.0.tiers.1.upTo).
            errors.update(s.flat_errors(errors.pop("prices", {}), "prices"))
            raise ValidationError(errors)
        data = s.snake_case(dict(serializer.validated_data))
        if "prices" in data:
            data["prices"] = [_plain(price) for price in data["prices"]]
        plan, created = catalog.plan_upsert(**data)
        plan = catalog_selectors.plan_list().get(pk=plan.pk)
        return Response(s.PlanSerializer(plan).data, status=_created(created))


def _plain(price: Any) -> dict[str, Any]:
    """A parsed price as the service takes it (tiers as plain dicts)."""
    price = dict(price)
    price["tiers"] = [dict(tier) for tier in price.get("tiers") or []]
    return price


class ProductListView(OperatorAPIView):
    @extend_schema(responses=s.ProductSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(s.ProductSerializer(catalog_selectors.product_list(), many=True).data)

    @extend_schema(
        request=s.ProductInputSerializer,
        responses={200: s.ProductSerializer, 201: s.ProductSerializer},
    )
    def post(self, request: Request) -> Response:
        product, created = catalog.product_upsert(
            **self.parse(s.ProductInputSerializer, request.data)
        )
        return Response(s.ProductSerializer(product).data, status=_created(created))


class AccountKitListView(OperatorAPIView):
    @extend_schema(responses=s.AccountKitSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(
            s.AccountKitSerializer(catalog_selectors.account_kit_list(), many=True).data
        )

    @extend_schema(
        request=s.AccountKitInputSerializer,
        responses={200: s.AccountKitSerializer, 201: s.AccountKitSerializer},
    )
    def post(self, request: Request) -> Response:
        kit, created = catalog.account_kit_upsert(
            **self.parse(s.AccountKitInputSerializer, request.data)
        )
        kit = catalog_selectors.account_kit_list().get(pk=kit.pk)
        return Response(s.AccountKitSerializer(kit).data, status=_created(created))


class CustomerCreateView(OperatorAPIView):
    @extend_schema(request=s.CustomerInputSerializer, responses={201: s.CustomerSerializer})
    def post(self, request: Request) -> Response:
        customer = customers.customer_create(**self.parse(s.CustomerInputSerializer, request.data))
        return Response(s.CustomerSerializer(customer).data, status=status.HTTP_201_CREATED)


class CustomerDetailView(OperatorAPIView):
    @extend_schema(responses={200: s.CustomerSerializer, **errors(404)})
    def get(self, request: Request, user_id: str) -> Response:
        customer = customers_selectors.customer_get(customer_id=user_id)
        return Response(s.CustomerSerializer(customer).data)


class TokenView(OperatorAPIView):
    @extend_schema(
        request=s.TokenInputSerializer, responses={201: s.TokenSerializer, **errors(404)}
    )
    def post(self, request: Request, user_id: str) -> Response:
        customer = customers_selectors.customer_get(customer_id=user_id)
        data = self.parse(s.TokenInputSerializer, request.data)
        grantee = _grantee(data.pop("grantee_id", None))
        token, key = customers.tenant_token_issue(customer=customer, grantee=grantee, **data)
        body = {"token": key, "prefix": token.prefix, "name": token.name}
        return Response(s.TokenSerializer(body).data, status=status.HTTP_201_CREATED)


def _grantee(grantee_id: str | None) -> Any:
    if grantee_id is None:
        return None
    from django.contrib.auth import get_user_model

    User = get_user_model()
    try:
        return User._default_manager.get(pk=User._meta.pk.to_python(grantee_id))
    except Exception:
        raise ValidationError({"granteeId": [f"No user with id {grantee_id!r}."]}) from None


def subscription_answer(customer: Any) -> Response:
    subscription = subscriptions_selectors.subscription_get(customer=customer)
    if subscription is None:
        raise NotFound("This customer has no subscription.")
    kit = customers_selectors.kit_of(customer=customer)
    context = {"kit_key": kit.key if kit else None}
    return Response(s.SubscriptionSerializer(subscription, context=context).data)


class SubscriptionView(OperatorAPIView):
    @extend_schema(responses={200: s.SubscriptionSerializer, **errors(404)})
    def get(self, request: Request, user_id: str) -> Response:
        return subscription_answer(customers_selectors.customer_get(customer_id=user_id))

    @extend_schema(
        request=s.SubscriptionInputSerializer,
        responses={200: s.SubscriptionSerializer, **errors(404)},
    )
    def put(self, request: Request, user_id: str) -> Response:
        customer = customers_selectors.customer_get(customer_id=user_id)
        subscriptions.subscription_set(
            customer=customer, **self.parse(s.SubscriptionInputSerializer, request.data)
        )
        return subscription_answer(customer)


class TrialView(OperatorAPIView):
    """Start a trial without Stripe and without a card: one per customer."""

    @extend_schema(
        request=s.TrialInputSerializer,
        responses={200: s.SubscriptionSerializer, **errors(404, 409)},
    )
    def post(self, request: Request, user_id: str) -> Response:
        customer = customers_selectors.customer_get(customer_id=user_id)
        subscriptions.trial_start(
            customer=customer, **self.parse(s.TrialInputSerializer, request.data)
        )
        return subscription_answer(customer)


@outside_transactions
class ChangePlanView(OperatorAPIView):
    """Move the customer to another plan (on Stripe first when Stripe-backed)."""

    @extend_schema(
        request=s.ChangePlanInputSerializer,
        responses={200: s.SubscriptionSerializer, **errors(202, 404, 409, 502)},
    )
    def post(self, request: Request, user_id: str) -> Response:
        customer = customers_selectors.customer_get(customer_id=user_id)
        data = self.parse(s.ChangePlanInputSerializer, request.data)
        stripe_calls.plan_change(customer=customer, **data)
        return subscription_answer(customer)


@outside_transactions
class CancelView(OperatorAPIView):
    """The operator's cancel: the same as the customer's ``/billing/cancel``."""

    @extend_schema(
        request=s.CancelInputSerializer,
        responses={200: s.CancelSerializer, **errors(202, 404, 409, 502)},
    )
    def post(self, request: Request, user_id: str) -> Response:
        customer = customers_selectors.customer_get(customer_id=user_id)
        data = self.parse(s.CancelInputSerializer, request.data)
        return Response(
            s.cancel_answer(stripe_calls.subscription_cancel(customer=customer, **data))
        )


@outside_transactions
class ReactivateView(OperatorAPIView):
    """Undo a pending cancellation at the period's end."""

    @extend_schema(
        request=None, responses={200: s.SubscriptionSerializer, **errors(202, 404, 409, 502)}
    )
    def post(self, request: Request, user_id: str) -> Response:
        customer = customers_selectors.customer_get(customer_id=user_id)
        stripe_calls.subscription_reactivate(customer=customer)
        return subscription_answer(customer)


def seat_operations(**kwargs: Any) -> s.serializers.ListSerializer:
    """1 to 100 seat operations, applied in order."""
    return s.serializers.ListSerializer(
        child=s.SeatOperationSerializer(), allow_empty=False, max_length=100, **kwargs
    )


class SeatsView(OperatorAPIView):
    """A subscription's seats and who holds them; ``PUT`` takes Salable's operations."""

    def _answer(self, subscription_id: str) -> Response:
        subscription = subscriptions_selectors.subscription_by_id(subscription_id=subscription_id)
        if subscription is None:
            raise NotFound(f"No subscription with id {subscription_id!r}.")
        return Response(s.SeatsSerializer(subscription).data)

    @extend_schema(responses={200: s.SeatsSerializer, **errors(404)})
    def get(self, request: Request, subscription_id: str) -> Response:
        return self._answer(subscription_id)

    @extend_schema(
        request=seat_operations(),
        responses={200: s.SeatsSerializer, **errors(404, 409)},
    )
    def put(self, request: Request, subscription_id: str) -> Response:
        serializer = seat_operations(data=request.data)
        if not serializer.is_valid():
            raise ValidationError(_operation_errors(serializer.errors))
        operations = [s.snake_case(dict(operation)) for operation in serializer.validated_data]
        subscriptions.seats_manage(subscription_id=subscription_id, operations=operations)
        return self._answer(subscription_id)


def _operation_errors(errors: Any) -> Any:
    """DRF keys a list's errors by item index (or lists them): name them as
    ``seats_manage`` does, ``operations.<index>.<field>``."""
    items = errors.items() if isinstance(errors, dict) else enumerate(errors)
    named: dict[Any, Any] = {}
    for index, fields in items:
        if not isinstance(index, int):
            named[index] = fields  # about the whole body: not a list, too long
        elif isinstance(fields, list):
            named[f"operations.{index}"] = fields  # about the whole operation: null
        else:
            for field, messages in (fields or {}).items():
                named[f"operations.{index}.{field}"] = messages
    return named


class UsageView(OperatorAPIView):
    @extend_schema(responses={200: s.UsageRollupSerializer, **errors(404)})
    def get(self, request: Request, user_id: str) -> Response:
        customer = customers_selectors.customer_get(customer_id=user_id)
        rollup = metering_selectors.usage_rollup(customer_id=customer.pk)
        return Response(s.UsageRollupSerializer(rollup).data)

    @extend_schema(
        request=s.UsageRecordInputSerializer,
        responses={
            201: s.UsageRecordSerializer,
            200: s.UsageRecordSerializer,
            **errors(402, 403, 404, 409, 429, status_403=REFUSED_OR_FORBIDDEN),
        },
    )
    def post(self, request: Request, user_id: str) -> Response:
        customer = customers_selectors.customer_get(customer_id=user_id)
        header = request.headers.get("Idempotency-Key", "")
        data = self.parse(s.UsageRecordInputSerializer, request.data)
        if "idempotency_key" not in data and header:
            data["idempotency_key"] = self.parse(
                s.UsageRecordInputSerializer, {"primitive": "x", "idempotencyKey": header}
            )["idempotency_key"]
        reservation = metering.usage_record(customer_id=customer.pk, **data)
        body = s.UsageRecordSerializer(s.reservation_data(reservation)).data
        return Response(body, status=_created(not reservation.duplicate))


class GaugeView(OperatorAPIView):
    """A gauge of the customer (storage, say): its level and limit; ``POST`` changes it."""

    @extend_schema(responses={200: s.GaugeStateSerializer, **errors(400, 404)})
    def get(self, request: Request, user_id: str, primitive: str) -> Response:
        customer = customers_selectors.customer_get(customer_id=user_id)
        primitive = self.parse(s.CheckInputSerializer, {"primitive": primitive})["primitive"]
        state = metering_selectors.gauge_state(customer_id=customer.pk, primitive=primitive)
        return Response(s.GaugeStateSerializer(state).data)

    @extend_schema(
        request=s.GaugeChangeInputSerializer,
        responses={
            201: s.GaugeChangeSerializer,
            200: s.GaugeChangeSerializer,
            **errors(402, 403, 404, 409, 429, status_403=REFUSED_OR_FORBIDDEN),
        },
    )
    def post(self, request: Request, user_id: str, primitive: str) -> Response:
        customer = customers_selectors.customer_get(customer_id=user_id)
        data = self.parse(s.GaugeChangeInputSerializer, request.data)
        header = request.headers.get("Idempotency-Key", "")
        if "idempotency_key" not in data and header:
            data["idempotency_key"] = self.parse(
                s.GaugeChangeInputSerializer,
                {"op": "set", "amount": 0, "idempotencyKey": header},
            )["idempotency_key"]
        changed = metering.gauge_change(customer_id=customer.pk, primitive=primitive, **data)
        body = s.GaugeChangeSerializer(changed).data
        return Response(body, status=_created(not changed.duplicate))


class Pagination(CursorPagination):
    """Cursor pages of 20 (``pageSize``, at most 100) as ``{<key>: [...], next, previous}``."""

    key = "results"
    page_size = 20
    max_page_size = 100
    page_size_query_param = "pageSize"

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        # DRF checks a cursor's offset, not its position: a position the ordering field
        # cannot take ("p=notadate") is an invalid cursor too, not a 500.
        try:
            return super().paginate_queryset(queryset, request, view)
        except (DjangoValidationError, ValueError, TypeError, OverflowError):
            raise exceptions.NotFound(self.invalid_cursor_message) from None

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            {self.key: data, "next": self.get_next_link(), "previous": self.get_previous_link()}
        )


class RecordPagination(Pagination):
    key = "records"
    # Cursor pagination orders by a field of the row itself: the period's start, annotated.
    ordering = "-period_start"


class UsageRecordListView(OperatorAPIView):
    """The customer's billing periods' records, newest first; ``?status=`` filters. The
    open period's record (``current``) leads the first page."""

    @extend_schema(
        parameters=[s.UsageRecordStatusSerializer, *PAGE_PARAMETERS],
        responses={200: s.CycleRecordListSerializer, **errors(400, 404)},
    )
    def get(self, request: Request, user_id: str) -> Response:
        customer = customers_selectors.customer_get(customer_id=user_id)
        wanted = self.parse(s.UsageRecordStatusSerializer, request.query_params).get("status")
        paginator = RecordPagination()
        closed = cycles.records_of(
            customer=customer, status=wanted if wanted != "current" else None
        ).annotate(period_start=F("period__start"))
        page = list(paginator.paginate_queryset(closed, request, self) or [])
        if wanted == "current":
            page = []
        first_page = not request.query_params.get(paginator.cursor_query_param)
        if first_page and wanted in (None, "current"):
            current = cycles.record_current(customer=customer)
            if current is not None:
                page.insert(0, current)
        return paginator.get_paginated_response(s.CycleRecordSerializer(page, many=True).data)


class UsageRecordCurrentView(OperatorAPIView):
    @extend_schema(responses={200: s.CycleRecordSerializer, **errors(404)})
    def get(self, request: Request, user_id: str) -> Response:
        customer = customers_selectors.customer_get(customer_id=user_id)
        record = cycles.record_current(customer=customer)
        if record is None:
            raise NotFound("This customer has no open billing period (no live subscription).")
        return Response(s.CycleRecordSerializer(record).data)


def upcoming_answer(customer: Any) -> Response:
    upcoming = cycles.upcoming(customer=customer)
    if upcoming is None:
        raise NotFound("There is no open billing period (no live subscription).")
    return Response(s.UpcomingSerializer(s.upcoming_data(upcoming)).data)


class UpcomingView(OperatorAPIView):
    """The open period's charges so far and as projected to its end (read only)."""

    @extend_schema(responses={200: s.UpcomingSerializer, **errors(404)})
    def get(self, request: Request, user_id: str) -> Response:
        return upcoming_answer(customers_selectors.customer_get(customer_id=user_id))


class CheckView(OperatorAPIView):
    @extend_schema(
        parameters=[s.CheckInputSerializer], responses={200: s.CheckSerializer, **errors(400, 404)}
    )
    def get(self, request: Request, user_id: str) -> Response:
        customer = customers_selectors.customer_get(customer_id=user_id)
        data = self.parse(s.CheckInputSerializer, request.query_params)
        return Response(
            s.CheckSerializer(metering.usage_check(customer_id=customer.pk, **data)).data
        )


class UsageEventsView(OperatorAPIView):
    """Batch ingestion of reported usage: up to 1,000 events, one result each, in order."""

    @extend_schema(request=s.UsageBatchInputSerializer, responses=s.UsageBatchSerializer)
    def post(self, request: Request) -> Response:
        events = request.data.get("events") if isinstance(request.data, dict) else None
        if not isinstance(events, list) or not 0 < len(events) <= metering.BATCH_LIMIT:
            raise ValidationError({"events": [f"A list of 1 to {metering.BATCH_LIMIT} events."]})
        return Response({"results": metering.usage_ingest(events=events)})


class LicenseCheckView(OperatorAPIView):
    """What each grantee may do: the plan, the kit's primitives and the plan's features of
    every subscription it uses, as Salable's license check answers; 204 when none."""

    @extend_schema(
        parameters=[s.LicenseCheckInputSerializer],
        responses={
            200: s.LicenseCheckSerializer,
            204: OpenApiResponse(description="None"),
            **errors(400),
        },
    )
    def get(self, request: Request) -> Response:
        data = self.parse(s.LicenseCheckInputSerializer, request.query_params)
        capabilities = license_check(grantee_ids=data["grantee_ids"], grace_days=data["grace"])
        if not capabilities:
            return Response(status=status.HTTP_204_NO_CONTENT)
        body = {"capabilities": capabilities, "granteeIds": data["grantee_ids"]}
        return Response(s.LicenseCheckSerializer(body).data)
