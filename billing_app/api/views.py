"""Operator API (``/v1/``). Each view parses, calls one service or selector, serializes."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema as _extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from .. import cycles, enforcement, selectors, services, stripe_sync
from ..exceptions import NotFound
from ..models import UsageRecord
from . import serializers as s
from .authentication import OperatorKeyAuthentication, TenantTokenAuthentication
from .permissions import IsOperator


def extend_schema(**kwargs: Any) -> Any:
    """drf-spectacular's decorator, bound to its AutoSchema whatever the host's
    ``DEFAULT_SCHEMA_CLASS`` is (a method decorator otherwise reads that setting)."""

    def decorate(method: Any) -> Any:
        method.schema = AutoSchema
        return _extend_schema(**kwargs)(method)

    return decorate


def billing_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, with field errors named as the client sent them (camelCase)."""
    response = exception_handler(exc, context)
    if (
        response is not None
        and isinstance(exc, ValidationError)
        and isinstance(response.data, dict)
    ):
        response.data = {s.camel_case(k): v for k, v in response.data.items()}
    return response


class BillingAPIView(APIView):
    """Base of the app's views: its own authentication, schema and error format, so none of
    them depends on the host project's ``REST_FRAMEWORK`` settings."""

    authentication_classes = [
        OperatorKeyAuthentication,
        TenantTokenAuthentication,
        SessionAuthentication,
    ]
    schema = AutoSchema()

    def get_exception_handler(self) -> Any:
        return billing_exception_handler

    @staticmethod
    def parse(serializer_class: type[s.serializers.Serializer], data: Any) -> dict[str, Any]:
        serializer = serializer_class(data=data)
        serializer.is_valid(raise_exception=True)
        return s.snake_case(dict(serializer.validated_data))


class OperatorAPIView(BillingAPIView):
    permission_classes = [IsOperator]


class PlanListView(OperatorAPIView):
    @extend_schema(responses=s.PlanSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(s.PlanSerializer(selectors.plan_list(), many=True).data)

    @extend_schema(request=s.PlanInputSerializer, responses=s.PlanSerializer)
    def post(self, request: Request) -> Response:
        plan, created = services.plan_upsert(**self.parse(s.PlanInputSerializer, request.data))
        plan = selectors.plan_list().get(pk=plan.pk)
        return Response(
            s.PlanSerializer(plan).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class AccountKitListView(OperatorAPIView):
    @extend_schema(responses=s.AccountKitSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(s.AccountKitSerializer(selectors.account_kit_list(), many=True).data)

    @extend_schema(request=s.AccountKitInputSerializer, responses=s.AccountKitSerializer)
    def post(self, request: Request) -> Response:
        data = self.parse(s.AccountKitInputSerializer, request.data)
        kit, created = services.account_kit_upsert(**data)
        kit = selectors.account_kit_list().get(pk=kit.pk)
        return Response(
            s.AccountKitSerializer(kit).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class TenantCreateView(OperatorAPIView):
    @extend_schema(request=s.TenantInputSerializer, responses={201: s.TenantSerializer})
    def post(self, request: Request) -> Response:
        user = services.tenant_create(**self.parse(s.TenantInputSerializer, request.data))
        return Response(s.TenantSerializer(user).data, status=status.HTTP_201_CREATED)


class TenantDetailView(OperatorAPIView):
    @extend_schema(responses=s.TenantSerializer)
    def get(self, request: Request, user_id: str) -> Response:
        return Response(s.TenantSerializer(selectors.tenant_get(user_id=user_id)).data)


class TenantTokenView(OperatorAPIView):
    @extend_schema(request=s.TokenInputSerializer, responses={201: s.TokenSerializer})
    def post(self, request: Request, user_id: str) -> Response:
        user = selectors.tenant_get(user_id=user_id)
        data = self.parse(s.TokenInputSerializer, request.data)
        token, key = services.tenant_token_issue(user=user, **data)
        body = {"token": key, "prefix": token.prefix, "name": token.name}
        return Response(s.TokenSerializer(body).data, status=status.HTTP_201_CREATED)


class SubscriptionView(OperatorAPIView):
    def _answer(self, user: Any) -> Response:
        subscription = selectors.subscription_get(user=user)
        if subscription is None:
            raise NotFound("This user has no subscription.")
        kit = selectors.kit_of(user=user)
        context = {"kit_key": kit.key if kit else None}
        return Response(s.SubscriptionSerializer(subscription, context=context).data)

    @extend_schema(responses=s.SubscriptionSerializer)
    def get(self, request: Request, user_id: str) -> Response:
        return self._answer(selectors.tenant_get(user_id=user_id))

    @extend_schema(request=s.SubscriptionInputSerializer, responses=s.SubscriptionSerializer)
    def put(self, request: Request, user_id: str) -> Response:
        user = selectors.tenant_get(user_id=user_id)
        services.subscription_set(
            user=user, **self.parse(s.SubscriptionInputSerializer, request.data)
        )
        return self._answer(user)


class ChangePlanView(SubscriptionView):
    """Move the tenant to another plan (on Stripe first when Stripe-backed)."""

    @extend_schema(request=s.ChangePlanInputSerializer, responses=s.SubscriptionSerializer)
    def post(self, request: Request, user_id: str) -> Response:
        user = selectors.tenant_get(user_id=user_id)
        stripe_sync.plan_change(user=user, **self.parse(s.ChangePlanInputSerializer, request.data))
        return self._answer(user)


class CancelView(OperatorAPIView):
    """The operator's cancel: the same as the tenant's ``/billing/cancel``."""

    @extend_schema(request=s.CancelInputSerializer, responses=s.CancelSerializer)
    def post(self, request: Request, user_id: str) -> Response:
        user = selectors.tenant_get(user_id=user_id)
        data = self.parse(s.CancelInputSerializer, request.data)
        return Response(s.cancel_answer(stripe_sync.subscription_cancel(user=user, **data)))


class UsageView(OperatorAPIView):
    @extend_schema(responses=s.UsageRollupSerializer)
    def get(self, request: Request, user_id: str) -> Response:
        rollup = selectors.usage_rollup(user=selectors.tenant_get(user_id=user_id))
        return Response(s.UsageRollupSerializer(rollup).data)

    @extend_schema(
        request=s.UsageRecordInputSerializer,
        responses={201: s.UsageRecordSerializer, 200: s.UsageRecordSerializer},
    )
    def post(self, request: Request, user_id: str) -> Response:
        user = selectors.tenant_get(user_id=user_id)
        data = self.parse(s.UsageRecordInputSerializer, request.data)
        data.setdefault("idempotency_key", request.headers.get("Idempotency-Key", ""))
        reservation = enforcement.record(user=user, **data)
        body = s.UsageRecordSerializer(s.reservation_data(reservation)).data
        return Response(
            body, status=status.HTTP_200_OK if reservation.duplicate else status.HTTP_201_CREATED
        )


class Pagination(CursorPagination):
    """Cursor pages of 20 (``pageSize``, at most 100) as ``{<key>: [...], next, previous}``."""

    key = "results"
    page_size = 20
    max_page_size = 100
    page_size_query_param = "pageSize"

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            {self.key: data, "next": self.get_next_link(), "previous": self.get_previous_link()}
        )


class RecordPagination(Pagination):
    key = "records"
    ordering = "-cycle_start"


class UsageRecordListView(OperatorAPIView):
    """The tenant's billing cycles, newest first; ``?status=`` filters."""

    @extend_schema(
        parameters=[s.UsageRecordStatusSerializer], responses=s.CycleRecordListSerializer
    )
    def get(self, request: Request, user_id: str) -> Response:
        user = selectors.tenant_get(user_id=user_id)
        status_filter = self.parse(s.UsageRecordStatusSerializer, request.query_params)
        cycles.follow(user=user)
        records = UsageRecord.objects.filter(user=user, **status_filter).select_related("plan")
        paginator = RecordPagination()
        page = paginator.paginate_queryset(records, request, self)
        return paginator.get_paginated_response(s.CycleRecordSerializer(page, many=True).data)


class UsageRecordCurrentView(OperatorAPIView):
    @extend_schema(responses=s.CycleRecordSerializer)
    def get(self, request: Request, user_id: str) -> Response:
        record = cycles.follow(user=selectors.tenant_get(user_id=user_id))
        if record is None:
            raise NotFound("This user has no open billing cycle (no live subscription).")
        return Response(s.CycleRecordSerializer(record).data)


class CheckView(OperatorAPIView):
    @extend_schema(parameters=[s.CheckInputSerializer], responses=s.CheckSerializer)
    def get(self, request: Request, user_id: str) -> Response:
        user = selectors.tenant_get(user_id=user_id)
        result = enforcement.check(
            user=user, **self.parse(s.CheckInputSerializer, request.query_params)
        )
        return Response(s.CheckSerializer(result).data)


class UsageEventsView(OperatorAPIView):
    """Batch ingestion of reported usage: up to 1,000 events, one result each, in order."""

    @extend_schema(request=s.UsageBatchInputSerializer, responses=s.UsageBatchSerializer)
    def post(self, request: Request) -> Response:
        events = request.data.get("events") if isinstance(request.data, dict) else None
        if not isinstance(events, list) or not 0 < len(events) <= enforcement.BATCH_LIMIT:
            raise ValidationError({"events": [f"A list of 1 to {enforcement.BATCH_LIMIT} events."]})
        return Response({"results": enforcement.ingest(events=events)})
