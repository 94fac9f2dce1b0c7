"""The operator's console. Saves and actions that change billing state call services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join
from rest_framework_api_key.admin import APIKeyModelAdmin

from . import cycles, outbox, selectors, services, stripe_sync
from .exceptions import BillingError, InvalidInput
from .models import (
    AccountKit,
    KitAssignment,
    KitPrimitive,
    OperatorKey,
    OutboxMessage,
    Plan,
    PlanQuota,
    StripeSyncProblem,
    Subscription,
    TenantToken,
    UsageCounter,
    UsageEvent,
    UsageRecord,
)


class KitPrimitiveInline(admin.TabularInline):
    model = KitPrimitive
    extra = 1


@admin.register(AccountKit)
class AccountKitAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "primitive_list", "updated_at"]
    search_fields = ["key", "name"]
    inlines = [KitPrimitiveInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AccountKit]:
        return super().get_queryset(request).prefetch_related("primitives")

    @admin.display(description="primitives")
    def primitive_list(self, kit: AccountKit) -> str:
        return ", ".join(p.primitive for p in kit.primitives.all())


class PlanQuotaInline(admin.TabularInline):
    model = PlanQuota
    extra = 1


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "account_kit", "period", "stripe_price_id", "active"]
    list_filter = ["active", "period"]
    search_fields = ["key", "name", "stripe_price_id"]
    inlines = [PlanQuotaInline]


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["user", "plan", "status", "current_period_end", "cancel_at_period_end"]
    list_filter = ["status", "plan"]
    list_select_related = ["user", "plan"]
    search_fields = ["user__email", "stripe_customer_id", "stripe_subscription_id"]
    raw_id_fields = ["user"]
    readonly_fields = [
        "status_changed_at",
        "usage_this_cycle",
        "usage_this_window",
        "created_at",
        "updated_at",
    ]
    actions = ["assign_plan_kit", "change_plan"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # One subscription per tenant: moving one to another tenant is not an edit.
        readonly = list(super().get_readonly_fields(request, obj))
        return [*readonly, "user"] if obj is not None else readonly

    def save_model(self, request: HttpRequest, obj: Subscription, form: Any, change: bool) -> None:
        subscription = services.subscription_set(
            user=obj.user,
            plan_key=obj.plan.key,
            status=obj.status,
            stripe_customer_id=obj.stripe_customer_id,
            stripe_subscription_id=obj.stripe_subscription_id,
            current_period_start=obj.current_period_start,
            current_period_end=obj.current_period_end,
            cancel_at_period_end=obj.cancel_at_period_end,
        )
        obj.pk = subscription.pk
        obj.refresh_from_db()

    @admin.display(description="quotas and usage this window")
    def usage_this_window(self, obj: Subscription) -> str:
        if obj.pk is None:
            return "-"
        rollup = selectors.usage_rollup(user=obj.user)
        primitives = sorted(set(rollup.quotas) | set(rollup.usage))
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((p, rollup.usage.get(p, 0), rollup.quotas.get(p, "unlimited")) for p in primitives),
        )
        return format_html(
            "<p>{} to {}</p><table><tr><th>primitive</th><th>used</th><th>quota</th></tr>"
            "{}</table>",
            rollup.period_start,
            rollup.period_end,
            rows,
        )

    @admin.display(description="this cycle's usage against quotas")
    def usage_this_cycle(self, obj: Subscription) -> str:
        record = cycles.follow(user=obj.user) if obj.pk else None
        if record is None:
            return "-"
        bars = format_html_join(
            "",
            '<tr><td>{}</td><td>{} / {}</td><td><div style="width:200px;height:10px;'
            'background:#ddd"><div style="width:{}%;height:10px;background:{}">'
            "</div></div></td></tr>",
            (
                (
                    primitive,
                    entry["used"],
                    "unlimited" if entry["quota"] is None else entry["quota"],
                    _percent(entry),
                    "#ba2121" if entry["overage"] else "#417690",
                )
                for primitive, entry in sorted(cycles.current_usage(record).items())
            ),
        )
        return format_html(
            "<p>{} to {} on {}</p><table>{}</table>",
            record.cycle_start,
            record.cycle_end,
            record.plan.key,
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
                    "subscriptions": queryset.select_related("user", "plan"),
                    "plans": Plan.objects.filter(active=True),
                    "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                    "opts": self.model._meta,
                },
            )
        changed = 0
        for subscription in queryset.select_related("user"):
            try:
                stripe_sync.plan_change(user=subscription.user, plan_key=request.POST["plan_key"])
                changed += 1
            except BillingError as error:
                self.message_user(request, f"{subscription.user}: {error}", messages.ERROR)
        self.message_user(request, f"{changed} subscription(s) moved.")
        return None

    @admin.action(description="Assign each subscription's plan kit to its tenant")
    def assign_plan_kit(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        for subscription in queryset.select_related("plan__account_kit"):
            services.kit_assign(user=subscription.user, kit=subscription.plan.account_kit)
        self.message_user(request, f"Assigned the plan's kit to {queryset.count()} tenants.")


def _percent(entry: dict[str, Any]) -> int:
    if not entry["quota"]:
        return 100 if entry["used"] else 0
    return min(100, round(100 * entry["used"] / entry["quota"]))


@admin.register(KitAssignment)
class KitAssignmentAdmin(admin.ModelAdmin):
    list_display = ["user", "kit", "assigned_at"]
    list_filter = ["kit"]
    search_fields = ["user__email"]
    raw_id_fields = ["user"]

    def save_model(self, request: HttpRequest, obj: KitAssignment, form: Any, change: bool) -> None:
        assignment = services.kit_assign(user=obj.user, kit=obj.kit)
        obj.pk = assignment.pk if assignment else None


class _KeyAdmin(APIKeyModelAdmin):
    """Keys are created by a service and shown once in a message; revoking is an action."""

    actions = ["revoke"]

    def create(self, request: HttpRequest, obj: Any) -> tuple[Any, str]:
        raise NotImplementedError

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            obj.save()
            return
        try:
            created, key = self.create(request, obj)
        except InvalidInput as error:
            self.message_user(request, str(error.detail), messages.ERROR)
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
            services.api_key_revoke(key=key)


@admin.register(OperatorKey)
class OperatorKeyAdmin(_KeyAdmin):
    def create(self, request: HttpRequest, obj: OperatorKey) -> tuple[Any, str]:
        return services.operator_key_create(name=obj.name, expiry_date=obj.expiry_date)


@admin.register(TenantToken)
class TenantTokenAdmin(_KeyAdmin):
    list_display = ["prefix", "name", "user", "created", "revoked"]
    raw_id_fields = ["user"]

    def create(self, request: HttpRequest, obj: TenantToken) -> tuple[Any, str]:
        return services.tenant_token_issue(
            user=obj.user, name=obj.name, expiry_date=obj.expiry_date
        )


class _ReadOnlyAdmin(admin.ModelAdmin):
    """Usage is written by metering only: the admin shows it, never edits it."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UsageEvent)
class UsageEventAdmin(_ReadOnlyAdmin):
    list_display = ["occurred_at", "user", "primitive", "quantity", "idempotency_key"]
    list_filter = ["primitive"]
    list_select_related = ["user"]
    search_fields = ["user__email", "idempotency_key"]
    date_hierarchy = "occurred_at"


@admin.register(UsageCounter)
class UsageCounterAdmin(_ReadOnlyAdmin):
    list_display = ["user", "primitive", "window_start", "window_end", "used"]
    list_filter = ["primitive"]
    list_select_related = ["user"]
    search_fields = ["user__email"]
    date_hierarchy = "window_start"


@admin.register(UsageRecord)
class UsageRecordAdmin(_ReadOnlyAdmin):
    """Billing cycles: written when a cycle closes, never edited."""

    list_display = ["user", "plan", "status", "cycle_start", "cycle_end", "closed_at"]
    list_filter = ["status", "plan"]
    list_select_related = ["user", "plan"]
    search_fields = ["user__email"]
    date_hierarchy = "cycle_start"


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
        count = outbox.retry(queryset)
        self.message_user(request, f"{count} message(s) will be sent again.")


@admin.register(StripeSyncProblem)
class StripeSyncProblemAdmin(_ReadOnlyAdmin):
    """Stripe subscriptions that reached no tenant or no plan. Fix the cause (the detail
    says how), then retry: a sync that applies removes the row."""

    list_display = ["stripe_subscription_id", "reason", "stripe_customer_id", "updated_at"]
    list_filter = ["reason"]
    search_fields = ["stripe_subscription_id", "stripe_customer_id", "stripe_event_id"]
    actions = ["retry"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # dismiss a problem that needs no fix

    @admin.action(description="Retry: re-read from Stripe and apply")
    def retry(self, request: HttpRequest, queryset: QuerySet[StripeSyncProblem]) -> None:
        applied = 0
        for problem in queryset:
            try:
                applied += (
                    stripe_sync.subscription_sync(problem.stripe_subscription_id, refresh=True)
                    is not None
                )
            except (BillingError, stripe_sync.stripe.StripeError) as error:
                self.message_user(
                    request, f"{problem.stripe_subscription_id}: {error}", messages.ERROR
                )
        self.message_user(request, f"{applied} of {len(queryset)} applied.")
