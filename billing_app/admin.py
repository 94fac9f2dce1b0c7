"""The operator's console. Every save and action that changes billing state calls the same
service as the API; every page render only reads."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from rest_framework_api_key.admin import APIKeyModelAdmin

from .catalog import services as catalog
from .customers import services as customers
from .exceptions import BillingError, InvalidInput
from .metering.selectors import usage_rollup
from .models import (
    AccountKit,
    BillingPeriod,
    KitAssignment,
    KitPrimitive,
    OperatorKey,
    OutboxMessage,
    Plan,
    PlanFeature,
    PlanQuota,
    Problem,
    Seat,
    Subscription,
    TenantToken,
    UsageCounter,
    UsageEvent,
    UsageRecord,
)
from .outbox.services import messages_retry
from .stripe import calls as stripe_calls
from .stripe import sync as stripe_sync
from .subscriptions import services as subscriptions


def _when(value: Any) -> str:
    return date_format(timezone.localtime(value), "DATETIME_FORMAT") if value else "-"


def _rows(formsets: list[Any], model: type) -> list[dict[str, Any]]:
    """The rows an inline formset of ``model`` keeps, as cleaned data."""
    rows = []
    for formset in formsets:
        if formset.model is not model:
            continue
        for form in formset.forms:
            data = getattr(form, "cleaned_data", None)
            if data and not data.get("DELETE"):
                rows.append(data)
    return rows


class _ServiceSaveAdmin(admin.ModelAdmin):
    """The object and its inlines are written together by a service, in ``save_related``
    (after Django has validated the whole page), never by the forms themselves."""

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        pass

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        pass

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        try:
            saved = self.save_with_service(form.instance, list(formsets))
        except InvalidInput as error:
            self.message_user(request, str(error), messages.ERROR)
            return
        form.instance.pk = saved.pk

    def save_with_service(self, obj: Any, formsets: list[Any]) -> Any:
        raise NotImplementedError

    def construct_change_message(
        self, request: HttpRequest, form: Any, formsets: Any, add: bool = False
    ) -> Any:
        # The inline formsets saved nothing (the service did), so they have no saved
        # objects to tell of: Django would fail reading them.
        return super().construct_change_message(request, form, [], add)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Objects are kept by key: renaming the key would make another object.
        readonly = list(super().get_readonly_fields(request, obj))
        return [*readonly, "key"] if obj is not None else readonly


class KitPrimitiveInline(admin.TabularInline):
    model = KitPrimitive
    extra = 1


@admin.register(AccountKit)
class AccountKitAdmin(_ServiceSaveAdmin):
    list_display = ["key", "name", "primitive_list", "updated_at"]
    search_fields = ["key", "name"]
    inlines = [KitPrimitiveInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AccountKit]:
        return super().get_queryset(request).prefetch_related("primitives")

    @admin.display(description="primitives")
    def primitive_list(self, kit: AccountKit) -> str:
        return ", ".join(p.primitive for p in kit.primitives.all())

    def save_with_service(self, obj: AccountKit, formsets: list[Any]) -> AccountKit:
        rows = _rows(formsets, KitPrimitive)
        primitives = {row["primitive"]: row.get("rate_per_minute") for row in rows}
        return catalog.account_kit_upsert(key=obj.key, name=obj.name, primitives=primitives)[0]


class PlanQuotaInline(admin.TabularInline):
    model = PlanQuota
    extra = 1


class PlanFeatureInline(admin.TabularInline):
    model = PlanFeature
    extra = 1


@admin.register(Plan)
class PlanAdmin(_ServiceSaveAdmin):
    list_display = [
        "key",
        "name",
        "account_kit",
        "period",
        "billing_cadence",
        "stripe_price_id",
        "active",
    ]
    list_filter = ["active", "period"]
    search_fields = ["key", "name", "stripe_price_id"]
    inlines = [PlanQuotaInline, PlanFeatureInline]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # retire a plan with "active" off: customers and records point at it

    def save_with_service(self, obj: Plan, formsets: list[Any]) -> Plan:
        quotas = _rows(formsets, PlanQuota)
        return catalog.plan_upsert(
            key=obj.key,
            name=obj.name,
            account_kit_id=obj.account_kit.key if obj.account_kit else None,
            stripe_price_id=obj.stripe_price_id,
            period=obj.period,
            billing_cadence=obj.billing_cadence,
            currency=obj.currency,
            active=obj.active,
            stripe_meter_event=obj.stripe_meter_event,
            quotas={row["primitive"]: row["limit"] for row in quotas},
            per_seat=[row["primitive"] for row in quotas if row.get("per_seat")],
            overage={
                row["primitive"]: row["overage_unit_price"]
                for row in quotas
                if row.get("overage") == PlanQuota.Overage.BILL
            },
            features=[row["feature"] for row in _rows(formsets, PlanFeature)],
        )[0]


class PeriodInline(admin.TabularInline):
    model = BillingPeriod
    fields = readonly_fields = ("start", "end", "plan", "source", "end_reason", "recorded")
    extra = 0
    can_delete = False
    ordering = ["-start"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(boolean=True)
    def recorded(self, period: BillingPeriod) -> bool:
        return hasattr(period, "record")


class SeatInline(admin.TabularInline):
    model = Seat
    fields = readonly_fields = ("grantee", "assigned_at")
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["customer", "plan", "status", "seats", "cancel_at_period_end", "updated_at"]
    list_filter = ["status", "plan"]
    list_select_related = ["customer", "plan"]
    search_fields = ["stripe_customer_id", "stripe_subscription_id"]
    raw_id_fields = ["customer"]
    fields = [
        "customer",
        "plan",
        "status",
        "seats",
        "cancel_at_period_end",
        "stripe_customer_id",
        "stripe_subscription_id",
        "usage",
        "billing_cycle_anchor",
        "started_at",
        "ended_at",
        "status_changed_at",
    ]
    readonly_fields = [
        "usage",
        "billing_cycle_anchor",
        "started_at",
        "ended_at",
        "status_changed_at",
    ]
    inlines = [PeriodInline, SeatInline]
    actions = ["change_plan"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # One subscription per customer: moving one to another customer is not an edit.
        readonly = list(super().get_readonly_fields(request, obj))
        return [*readonly, "customer"] if obj is not None else readonly

    def save_model(self, request: HttpRequest, obj: Subscription, form: Any, change: bool) -> None:
        subscription = subscriptions.subscription_set(
            customer=obj.customer,
            plan_key=obj.plan.key,
            status=obj.status,
            seats=obj.seats,
            stripe_customer_id=obj.stripe_customer_id,
            stripe_subscription_id=obj.stripe_subscription_id,
            cancel_at_period_end=obj.cancel_at_period_end,
        )
        obj.pk = subscription.pk
        obj.refresh_from_db()

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        pass  # periods and seats are shown, not edited here

    def construct_change_message(
        self, request: HttpRequest, form: Any, formsets: Any, add: bool = False
    ) -> Any:
        # The formsets of periods and seats saved nothing: Django would fail reading them.
        return super().construct_change_message(request, form, [], add)

    @admin.display(description="usage (as enforced)")
    def usage(self, obj: Subscription) -> str:
        if obj.pk is None:
            return "-"
        rollup = usage_rollup(customer_id=obj.customer_id)
        bars = format_html_join(
            "",
            '<tr><td>{}</td><td>{} / {}</td><td><div style="width:200px;height:10px;'
            'background:#ddd" role="img" aria-label="{}% used"><div style="width:{}%;'
            'height:10px;background:{}"></div></div></td></tr>',
            (
                (
                    primitive,
                    rollup.usage.get(primitive, 0),
                    rollup.quotas.get(primitive, "unlimited"),
                    percent,
                    percent,
                    "#ba2121" if percent >= 100 else "#417690",
                )
                for primitive in rollup.primitives()
                for percent in [
                    _percent(rollup.usage.get(primitive, 0), rollup.quotas.get(primitive))
                ]
            ),
        )
        return format_html(
            "<p>Plan in force: {} ({}). Window {} to {}; resets {}.</p><table>{}</table>",
            rollup.plan or "none",
            rollup.status or "no subscription",
            _when(rollup.window.start),
            _when(rollup.window.end),
            _when(rollup.window.end),
            bars,
        )

    @admin.action(description="Change plan (on Stripe first when Stripe-backed)")
    def change_plan(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> Any:
        if "apply" not in request.POST:
            return TemplateResponse(
                request,
                "admin/billing_app/change_plan.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Change plan",
                    "subscriptions": queryset.select_related("customer", "plan"),
                    "plans": Plan.objects.filter(active=True),
                    "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                    "opts": self.model._meta,
                },
            )
        changed = 0
        for subscription in queryset.select_related("customer"):
            try:
                stripe_calls.plan_change(
                    customer=subscription.customer, plan_key=request.POST.get("plan_key", "")
                )
                changed += 1
            except BillingError as error:
                self.message_user(request, f"{subscription.customer}: {error}", messages.ERROR)
        self.message_user(request, f"{changed} subscription(s) moved.")
        return None


def _percent(used: int, limit: int | None) -> int:
    if not limit:
        return 100 if used and limit == 0 else 0
    return min(100, round(100 * used / limit))


@admin.register(KitAssignment)
class KitAssignmentAdmin(admin.ModelAdmin):
    list_display = ["customer", "kit", "assigned_at"]
    list_filter = ["kit"]
    raw_id_fields = ["customer"]

    def save_model(self, request: HttpRequest, obj: KitAssignment, form: Any, change: bool) -> None:
        assignment = customers.kit_assign(customer=obj.customer, kit=obj.kit)
        obj.pk = assignment.pk if assignment else None

    def delete_model(self, request: HttpRequest, obj: KitAssignment) -> None:
        customers.kit_assign(customer=obj.customer, kit=None)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[KitAssignment]) -> None:
        for assignment in queryset.select_related("customer"):
            customers.kit_assign(customer=assignment.customer, kit=None)


class _KeyAdmin(APIKeyModelAdmin):
    """Keys are created by a service and shown once in a message; revoking is an action."""

    actions = ["revoke"]

    def create(self, request: HttpRequest, obj: Any) -> tuple[Any, str]:
        raise NotImplementedError

    def save_model(
        self, request: HttpRequest, obj: Any, form: Any = None, change: bool = False
    ) -> None:
        if change:
            obj.save()
            return
        try:
            created, key = self.create(request, obj)
        except InvalidInput as error:
            self.message_user(request, str(error), messages.ERROR)
            return
        obj.pk, obj.prefix = created.pk, created.prefix
        self.message_user(
            request,
            f"The key for {created.name} is {key} . Store it now: it is not shown again.",
            messages.WARNING,
        )

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for key in queryset.filter(revoked=False):
            customers.api_key_revoke(key=key)


@admin.register(OperatorKey)
class OperatorKeyAdmin(_KeyAdmin):
    def create(self, request: HttpRequest, obj: OperatorKey) -> tuple[Any, str]:
        return customers.operator_key_create(name=obj.name, expiry_date=obj.expiry_date)


@admin.register(TenantToken)
class TenantTokenAdmin(_KeyAdmin):
    list_display = ("prefix", "name", "customer", "grantee", "created", "revoked")
    raw_id_fields = ["customer", "grantee"]

    def create(self, request: HttpRequest, obj: TenantToken) -> tuple[Any, str]:
        return customers.tenant_token_issue(
            customer=obj.customer, grantee=obj.grantee, name=obj.name, expiry_date=obj.expiry_date
        )


class _ReadOnlyAdmin(admin.ModelAdmin):
    """Written by the app only: the admin shows these, never edits them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UsageEvent)
class UsageEventAdmin(_ReadOnlyAdmin):
    list_display = ["occurred_at", "customer", "primitive", "quantity", "idempotency_key"]
    list_filter = ["primitive"]
    list_select_related = ["customer"]
    search_fields = ["idempotency_key"]
    date_hierarchy = "occurred_at"


@admin.register(UsageCounter)
class UsageCounterAdmin(_ReadOnlyAdmin):
    list_display = ["customer", "primitive", "window_start", "window_end", "used"]
    list_filter = ["primitive"]
    list_select_related = ["customer"]
    date_hierarchy = "window_start"


@admin.register(BillingPeriod)
class BillingPeriodAdmin(_ReadOnlyAdmin):
    list_display = ["customer", "plan", "start", "end", "source", "end_reason"]
    list_filter = ["source", "end_reason", "plan"]
    list_select_related = ["customer", "plan"]
    date_hierarchy = "start"


@admin.register(UsageRecord)
class UsageRecordAdmin(_ReadOnlyAdmin):
    """Billing periods' records: written when a period closes, never edited."""

    list_display = ["customer", "plan", "status", "period", "closed_at"]
    list_filter = ["status", "plan"]
    list_select_related = ["customer", "plan", "period"]
    date_hierarchy = "closed_at"


@admin.register(OutboxMessage)
class OutboxMessageAdmin(_ReadOnlyAdmin):
    """What billing_app owes other systems, and whether it got there."""

    list_display = ["key", "kind", "state", "attempts", "next_attempt_at", "delivered_at"]
    list_filter = ["state", "kind"]
    search_fields = ["key"]
    readonly_fields = ["last_error"]
    actions = ["retry"]

    @admin.action(description="Retry now")
    def retry(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        count = messages_retry(queryset)
        self.message_user(request, f"{count} message(s) will be sent again.")


@admin.register(Problem)
class ProblemAdmin(_ReadOnlyAdmin):
    """What the app could not do alone. Fix the cause (the detail says how), then retry:
    an attempt that succeeds removes the row."""

    list_display = ["subject", "kind", "attempts", "updated_at"]
    list_filter = ["kind"]
    search_fields = ["subject", "stripe_event_id"]
    actions = ["retry"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # dismiss a problem that needs no fix

    @admin.action(description="Retry: re-read from Stripe and apply")
    def retry(self, request: HttpRequest, queryset: QuerySet[Problem]) -> None:
        applied = 0
        for problem in queryset:
            kind, _, subject = problem.subject.partition(":")
            if kind != "stripe":
                self.message_user(
                    request, f"{problem.subject}: billing_close_cycles retries it.", messages.INFO
                )
                continue
            try:
                applied += stripe_sync.subscription_sync(subject) is not None
            except BillingError as error:
                self.message_user(request, f"{problem.subject}: {error}", messages.ERROR)
        self.message_user(request, f"{applied} of {len(queryset)} applied.")
