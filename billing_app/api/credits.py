"""Credits over the API: a customer's balance, grants and ledger for the operator
(``/v1/users/<id>/billing/credits...``) and the customer (``/billing/credits...``), credit
packs, and buying one through Stripe Checkout."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from ..customers.selectors import customer_get
from ..metering import credits
from ..models import CreditAutoTopUp, CreditEntry, CreditGrant, CreditPack
from ..stripe import calls as stripe_calls
from .schema import PAGE_PARAMETERS, errors, extend_schema
from .self_service import CustomerAPIView
from .serializers import RedirectSerializer, RedirectURLField
from .views import OperatorAPIView, Pagination, outside_transactions

# --- shapes ------------------------------------------------------------------------------


class GrantInputSerializer(serializers.Serializer):
    amount = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    reason = serializers.CharField(max_length=2000)
    # DRF's metaclass takes declared fields out of the class; the stubs see Field.source.
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=["manual", "promotion"], default="manual"
    )
    priority = serializers.IntegerField(min_value=0, max_value=1_000_000, default=100)
    effectiveAt = serializers.DateTimeField(required=False)
    expiresAt = serializers.DateTimeField(required=False, allow_null=True)


class GrantSerializer(serializers.Serializer):
    id = serializers.IntegerField(allow_null=True, help_text="null: made at the next draw")
    amount = serializers.IntegerField()
    remaining = serializers.IntegerField(
        help_text="What is left of it, as of the balance's last refresh."
    )
    source = serializers.CharField()  # type: ignore[assignment]  # as in GrantInputSerializer
    state = serializers.CharField()
    priority = serializers.IntegerField()
    effectiveAt = serializers.DateTimeField(source="effective_at")
    expiresAt = serializers.DateTimeField(source="expires_at", allow_null=True)
    reason = serializers.CharField()


class EntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    delta = serializers.IntegerField()
    grantId = serializers.IntegerField(source="grant_id", allow_null=True)
    eventId = serializers.IntegerField(source="event_id", allow_null=True)
    primitive = serializers.CharField()
    at = serializers.DateTimeField()


class CreditsSerializer(serializers.Serializer):
    balance = serializers.IntegerField()
    validUntil = serializers.DateTimeField(source="valid_until", allow_null=True)
    grants = GrantSerializer(many=True)


class EntryListSerializer(serializers.Serializer):
    entries = EntrySerializer(many=True)
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)


class PackInputSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200)
    credits = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    stripePriceId = serializers.CharField(max_length=255, required=False, allow_blank=True)
    expiresAfterDays = serializers.IntegerField(
        min_value=1, max_value=3660, required=False, allow_null=True
    )
    active = serializers.BooleanField(default=True)


class PackSerializer(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    credits = serializers.IntegerField()
    stripePriceId = serializers.CharField(source="stripe_price_id")
    expiresAfterDays = serializers.IntegerField(source="expires_after_days", allow_null=True)
    active = serializers.BooleanField()


class PackCheckoutInputSerializer(serializers.Serializer):
    packKey = serializers.SlugField(max_length=64)
    successUrl = RedirectURLField()
    cancelUrl = RedirectURLField()


class AutoTopUpInputSerializer(serializers.Serializer):
    packKey = serializers.SlugField(max_length=64, allow_null=True)
    below = serializers.IntegerField(min_value=1, max_value=2**63 - 1, required=False)
    monthlyCap = serializers.IntegerField(min_value=1, max_value=1000, default=1)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("packKey") is not None and "below" not in data:
            raise serializers.ValidationError({"below": ["Required with a pack."]})
        return data


class AutoTopUpSerializer(serializers.Serializer):
    packKey = serializers.CharField(source="pack.key", allow_null=True)
    below = serializers.IntegerField(allow_null=True)
    monthlyCap = serializers.IntegerField(source="monthly_cap", allow_null=True)


NO_TOP_UP = {"packKey": None, "below": None, "monthlyCap": None}


def credits_answer(customer_id: Any) -> dict[str, Any]:
    """As enforcement sees the balance now (computed, nothing written)."""
    state = credits.credits_state(customer_id=customer_id)
    grants = [grant for grant in state.grants if grant.state != CreditGrant.State.EXPIRED]
    return CreditsSerializer(
        {"balance": state.balance, "valid_until": state.valid_until, "grants": grants}
    ).data


# --- operator ----------------------------------------------------------------------------


class CreditsView(OperatorAPIView):
    """The customer's balance and its grants that are pending or active."""

    @extend_schema(responses={200: CreditsSerializer, **errors(404)})
    def get(self, request: Request, user_id: str) -> Response:
        return Response(credits_answer(customer_get(customer_id=user_id).pk))


class CreditGrantView(OperatorAPIView):
    """Give credits, with a reason; ``promotion`` or ``manual`` (the default)."""

    @extend_schema(request=GrantInputSerializer, responses={201: GrantSerializer, **errors(404)})
    def post(self, request: Request, user_id: str) -> Response:
        customer = customer_get(customer_id=user_id)
        data = self.parse(GrantInputSerializer, request.data)
        grant = credits.credits_grant(
            customer_id=customer.pk,
            granted_by=request.user if getattr(request.user, "pk", None) else None,
            **data,
        )
        return Response(GrantSerializer(grant).data, status=status.HTTP_201_CREATED)


class AutoTopUpView(OperatorAPIView):
    """The customer's auto top-up: buy ``packKey`` when a call leaves fewer than ``below``
    credits, at most ``monthlyCap`` times a calendar month; ``packKey: null`` turns it
    off."""

    @extend_schema(responses={200: AutoTopUpSerializer, **errors(404)})
    def get(self, request: Request, user_id: str) -> Response:
        customer = customer_get(customer_id=user_id)
        top_up = CreditAutoTopUp.objects.select_related("pack").filter(customer_id=customer.pk)
        found = top_up.first()
        return Response(AutoTopUpSerializer(found).data if found else NO_TOP_UP)

    @extend_schema(
        request=AutoTopUpInputSerializer, responses={200: AutoTopUpSerializer, **errors(404)}
    )
    def put(self, request: Request, user_id: str) -> Response:
        customer = customer_get(customer_id=user_id)
        data = self.parse(AutoTopUpInputSerializer, request.data)
        top_up = credits.credits_auto_top_up_set(
            customer_id=customer.pk,
            pack_key=data["pack_key"],
            below=data.get("below", 0),
            monthly_cap=data["monthly_cap"],
        )
        return Response(AutoTopUpSerializer(top_up).data if top_up else NO_TOP_UP)


class EntryPagination(Pagination):
    key = "entries"
    ordering = "-id"


class CreditLedgerView(OperatorAPIView):
    """Every change of the balance, newest first: grants, draws, refunds, expiries."""

    @extend_schema(parameters=PAGE_PARAMETERS, responses={200: EntryListSerializer, **errors(404)})
    def get(self, request: Request, user_id: str) -> Response:
        customer = customer_get(customer_id=user_id)
        paginator = EntryPagination()
        page = paginator.paginate_queryset(
            CreditEntry.objects.filter(customer_id=customer.pk), request, self
        )
        return paginator.get_paginated_response(EntrySerializer(page, many=True).data)


class CreditPackListView(OperatorAPIView):
    @extend_schema(responses=PackSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(PackSerializer(CreditPack.objects.all(), many=True).data)

    @extend_schema(
        request=PackInputSerializer, responses={200: PackSerializer, 201: PackSerializer}
    )
    def post(self, request: Request) -> Response:
        pack, created = credits.credit_pack_upsert(**self.parse(PackInputSerializer, request.data))
        return Response(
            PackSerializer(pack).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


# --- the customer ------------------------------------------------------------------------


class SelfCreditsView(CustomerAPIView):
    @extend_schema(responses=CreditsSerializer)
    def get(self, request: Request) -> Response:
        return Response(credits_answer(self.customer.pk))


@outside_transactions
class SelfCreditCheckoutView(CustomerAPIView):
    """Buy a credit pack: a Stripe Checkout Session in payment mode; the credits are given
    once Stripe says the session is paid (its webhook), however often it says so."""

    @extend_schema(
        request=PackCheckoutInputSerializer,
        responses={200: RedirectSerializer, **errors(409, 502)},
    )
    def post(self, request: Request) -> Response:
        data = self.parse(PackCheckoutInputSerializer, request.data)
        url = stripe_calls.credit_pack_checkout_create(customer=self.customer, **data)
        return Response({"url": url})
