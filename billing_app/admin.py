"""The operator's console. Every save and action that changes billing state calls the same
service as the API; every page render only reads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers, widgets
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from .catalog import services as catalog
from .conf import customer_model
from .customers import services as customers
from .cycles.pricing import decimal_text
from .cycles.selectors import upcoming
from .exceptions import BillingError, InvalidInput
from .metering import credits
from .metering.selectors import usage_rollup
from .models import (
    AccountKit,
    AdvanceCharge,
    BillingPeriod,
    CreditAutoTopUp,
    CreditBalance,
    CreditEntry,
    CreditGrant,
    CreditPack,
    GaugeEvent,
    KitAssignment,
    KitPrimitive,
    OperatorKey,
    OutboxMessage,
    OverageSpend,
    Plan,
    PlanFeature,
    PlanPrice,
    PlanQuota,
    Problem,
    Product,
    QuotaGrant,
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

# djangorestframework-api-key registers its own "API keys" page (importing its admin, as
# this module does, registers it). Those keys are not operator keys nor tenant tokens: the
# API refuses them, so the page would only mislead. A host may register it again.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


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


# The date hierarchy's parameters, and the largest each can be.
_DATE_PARTS = {"year": 9999, "month": 12, "day": 31}


class _BillingAdmin(admin.ModelAdmin):
    """What every admin of the app shares: a query string with a NUL character is refused
    (PostgreSQL cannot compare text with one; Django's filters and search pass it on), and
    so is a date part no date can have (year 9999999999 overflows)."""

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        for key, values in request.GET.lists():
            if "\x00" in "".join([key, *values]):
                return HttpResponseBadRequest("A query parameter holds a NUL character.")
            most = _DATE_PARTS.get(key.rsplit("__", 1)[-1])
            if most and not all(v.isdigit() and 1 <= int(v) <= most for v in values):
                return HttpResponseBadRequest(f"{key} is not a date part.")
        return super().changelist_view(request, extra_context)


class _ServiceSaveAdmin(_BillingAdmin):
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


@admin.register(Product)
class ProductAdmin(_ServiceSaveAdmin):
    list_display = ["key", "name", "updated_at"]
    search_fields = ["key", "name"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # plans point at it

    def save_with_service(self, obj: Product, formsets: list[Any]) -> Product:
        return catalog.product_upsert(key=obj.key, name=obj.name)[0]


class PlanQuotaInline(admin.TabularInline):
    model = PlanQuota
    extra = 1


PRICE_FIELDS = (
    "primitive",
    "model",
    "unit_amount",
    "package_size",
    "tiers",
    "included_quantity",
    "payment_terms",
)


class PlanPriceInline(admin.TabularInline):
    """Tiers are JSON: ``[{"up_to": 1000, "unit_amount": "0.5", "flat_amount": null},
    {"up_to": null, "unit_amount": "0.4"}]``, ascending, the last unbounded."""

    model = PlanPrice
    extra = 0
    fields = PRICE_FIELDS


class PlanFeatureInline(admin.TabularInline):
    model = PlanFeature
    extra = 1


@admin.register(Plan)
class PlanAdmin(_ServiceSaveAdmin):
    list_display = [
        "key",
        "name",
        "product",
        "account_kit",
        "period",
        "billing_cadence",
        "stripe_price_id",
        "active",
    ]
    list_filter = ["active", "period", "product"]
    list_select_related = ["product", "account_kit"]
    search_fields = ["key", "name", "stripe_price_id"]
    inlines = [PlanQuotaInline, PlanPriceInline, PlanFeatureInline]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # retire a plan with "active" off: customers and records point at it

    def save_with_service(self, obj: Plan, formsets: list[Any]) -> Plan:
        quotas = _rows(formsets, PlanQuota)
        fallback = obj.trial_fallback_plan
        return catalog.plan_upsert(
            key=obj.key,
            name=obj.name,
            product_id=obj.product.key if obj.product else None,
            invoice_display_name=obj.invoice_display_name,
            minimum_commitment=obj.minimum_commitment,
            overage_spend_cap=obj.overage_spend_cap,
            trial_days=obj.trial_days,
            trial_end_action=obj.trial_end_action,
            trial_fallback_plan=fallback.key if fallback else None,
            prices=[
                {name: row.get(name) for name in PRICE_FIELDS} for row in _rows(formsets, PlanPrice)
            ],
            account_kit_id=obj.account_kit.key if obj.account_kit else None,
            stripe_price_id=obj.stripe_price_id,
            period=obj.period,
            billing_cadence=obj.billing_cadence,
            currency=obj.currency,
            active=obj.active,
            stripe_meter_event=obj.stripe_meter_event,
            quotas={
                row["primitive"]: row["limit"]
                for row in quotas
                if row.get("kind", PlanQuota.Kind.COUNTER) == PlanQuota.Kind.COUNTER
            },
            gauges={
                row["primitive"]: row["limit"]
                for row in quotas
                if row.get("kind") == PlanQuota.Kind.GAUGE
            },
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
class SubscriptionAdmin(_BillingAdmin):
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
        "quota_grants",
        "credits",
        "upcoming_charges",
        "billing_cycle_anchor",
        "started_at",
        "ended_at",
        "status_changed_at",
        "trial_start",
        "trial_end",
    ]
    readonly_fields = [
        "usage",
        "quota_grants",
        "credits",
        "upcoming_charges",
        "billing_cycle_anchor",
        "started_at",
        "ended_at",
        "status_changed_at",
        "trial_start",
        "trial_end",
    ]
    inlines = [PeriodInline, SeatInline]
    actions = ["change_plan"]
    change_form_template = "admin/billing_app/subscription/change_form.html"

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
        counters = _usage_table(
            (p, rollup.usage.get(p, 0), rollup.quotas.get(p)) for p in rollup.primitives()
        )
        gauges = _usage_table(
            (p, rollup.levels.get(p, 0), rollup.level_limits.get(p)) for p in rollup.gauges()
        )
        return format_html(
            "<p>Plan in force: {} ({}). Window {} to {}; resets {}</p>{}{}",
            rollup.plan or "none",
            rollup.status or "no subscription",
            _when(rollup.window.start),
            _when(rollup.window.end),
            _when(rollup.window.end),
            counters,
            format_html("<p>Gauges (levels now; no window):</p>{}", gauges)
            if rollup.gauges()
            else "",
        )

    @admin.display(description="one-off quota grants")
    def quota_grants(self, obj: Subscription) -> str:
        if obj.pk is None:
            return "-"
        grants = QuotaGrant.objects.filter(customer_id=obj.customer_id).select_related(
            "granted_by"
        )[:GRANTS_SHOWN]
        if not grants:
            return "None."
        return format_html(
            "<table><thead><tr><th>granted</th><th>by</th><th>primitive</th><th>amount</th>"
            "<th>window</th><th>reason</th></tr></thead><tbody>{}</tbody></table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>+{}</td><td>{} to {}</td>"
                "<td>{}</td></tr>",
                (
                    (
                        _when(grant.granted_at),
                        grant.granted_by or "-",
                        grant.primitive,
                        grant.amount,
                        _when(grant.window_start),
                        _when(grant.window_end),
                        grant.reason,
                    )
                    for grant in grants
                ),
            ),
        )

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_grant": _can_grant(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[URLPattern]:
        grant = path(
            "<path:object_id>/grant/",
            self.admin_site.admin_view(self.grant_view),
            name="billing_app_subscription_grant",
        )
        return [grant, *super().get_urls()]

    def grant_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """A one-off increase of the customer's quota for its current window, through
        ``customers.services.quota_grant``, recorded with who granted it and why."""
        subscription = self.get_object(request, unquote(object_id))
        if subscription is None:
            raise Http404("No such subscription.")
        if not _can_grant(request):
            raise PermissionDenied
        customer = subscription.customer
        rollup = usage_rollup(customer_id=customer.pk)
        form = QuotaGrantForm(request.POST or None, primitives=sorted(rollup.quotas))
        if request.method == "POST" and form.is_valid():
            try:
                grant = customers.quota_grant(
                    customer=customer,
                    primitive=form.cleaned_data["primitive"],
                    amount=form.cleaned_data["amount"],
                    reason=form.cleaned_data["reason"],
                    granted_by=request.user,
                )
            except InvalidInput as error:
                for field, errors in error.fields.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                self.message_user(
                    request,
                    f"{customer}: +{grant.amount} {grant.primitive} until "
                    f"{_when(grant.window_end)}.",
                    messages.SUCCESS,
                )
                change = reverse("admin:billing_app_subscription_change", args=[subscription.pk])
                return HttpResponseRedirect(change)
        return TemplateResponse(
            request,
            "admin/billing_app/quota_grant.html",
            {
                **self.admin_site.each_context(request),
                "title": "Grant a one-off quota increase",
                "subtitle": str(customer),
                "opts": self.opts,
                "original": subscription,
                "form": form,
                "rollup": rollup,
                "window_end": _when(rollup.window.end),
                "usage": self.usage(subscription),
            },
        )

    @admin.display(description="credits")
    def credits(self, obj: Subscription) -> str:
        if obj.pk is None:
            return "-"
        return _credits_summary(obj.customer_id)

    @admin.display(description="upcoming charges")
    def upcoming_charges(self, obj: Subscription) -> str:
        found = upcoming(customer=obj.customer_id) if obj.pk is not None else None
        if found is None:
            return "-"
        currency = found.plan.currency.upper()
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (line.primitive or "plan", line.description, decimal_text(line.amount))
                for line in found.projection
            ),
        )
        return format_html(
            "<p>So far {} {}; projected to {} (usage so far, extrapolated linearly): {} {}. "
            "Amounts in minor units.</p><table>{}</table>",
            decimal_text(found.so_far_total),
            currency,
            _when(found.period.end),
            decimal_text(found.projection_total),
            currency,
            rows,
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


GRANT = "billing_app.add_quotagrant"
GRANTS_SHOWN = 20


def _can_grant(request: HttpRequest) -> bool:
    return request.user.has_perm(GRANT)


class QuotaGrantForm(forms.Form):
    primitive = forms.ChoiceField(help_text="Only primitives with a quota can be raised.")
    amount = forms.IntegerField(min_value=1, help_text="Extra units, for the current window.")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), help_text="Say why.")

    def __init__(self, *args: Any, primitives: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["primitive"].choices = [(p, p) for p in primitives]  # type: ignore[attr-defined]


def _usage_table(rows: Iterable[tuple[str, int, int | None]]) -> str:
    """A table of (primitive, used, limit or None) with a bar of the share used."""
    cells = []
    for primitive, used, limit in rows:
        percent = _percent(used, limit)
        color = "#ba2121" if percent >= 100 else "#417690"
        shown, left = (
            ("unlimited", "unlimited") if limit is None else (limit, f"{max(0, limit - used)} left")
        )
        cells.append((primitive, used, shown, percent, percent, color, left))
    body = format_html_join(
        "",
        '<tr><td>{}</td><td>{} / {}</td><td><div style="width:200px;height:10px;'
        'background:#ddd;border:1px solid #999" role="img" aria-label="{}% used">'
        '<div style="width:{}%;height:10px;background:{}"></div></div></td><td>{}</td></tr>',
        cells,
    )
    return format_html(
        "<table><thead><tr><th>primitive</th><th>used / limit</th><th>share used</th>"
        "<th>left</th></tr></thead><tbody>{}</tbody></table>",
        body,
    )


def _percent(used: int, limit: int | None) -> int:
    if not limit:
        return 100 if used and limit == 0 else 0
    return min(100, round(100 * used / limit))


@admin.register(KitAssignment)
class KitAssignmentAdmin(_BillingAdmin):
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


class _KeyAdmin(_BillingAdmin, APIKeyModelAdmin):
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


class _ReadOnlyAdmin(_BillingAdmin):
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


@admin.register(GaugeEvent)
class GaugeEventAdmin(_ReadOnlyAdmin):
    """Every change of every gauge: the levels are their sums."""

    list_display = ["occurred_at", "customer", "primitive", "op", "amount", "delta", "level_after"]
    list_filter = ["primitive", "op"]
    list_select_related = ["customer"]
    search_fields = ["idempotency_key"]
    date_hierarchy = "occurred_at"


@admin.register(OverageSpend)
class OverageSpendAdmin(_ReadOnlyAdmin):
    """What each customer's billed overage has cost per quota window, where its plan caps
    it (``overage_spend_cap``), as enforcement counts it."""

    list_display = ["customer", "window_start", "window_end", "spent"]
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


@admin.register(QuotaGrant)
class QuotaGrantAdmin(_ReadOnlyAdmin):
    """One-off quota increases: granted on a subscription's page, never edited."""

    list_display = [
        "granted_at",
        "customer",
        "primitive",
        "amount",
        "window_start",
        "window_end",
        "granted_by",
        "reason",
    ]
    list_filter = ["primitive"]
    list_select_related = ["customer", "granted_by"]
    search_fields = ["reason"]
    date_hierarchy = "granted_at"


@admin.register(AdvanceCharge)
class AdvanceChargeAdmin(_ReadOnlyAdmin):
    """What periods were charged in advance when they opened."""

    list_display = ["customer", "plan", "period_start", "period_end", "charged_at"]
    list_select_related = ["customer", "plan"]
    date_hierarchy = "period_start"


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
        # Dismiss a problem that needs no fix: with the delete permission, as Django asks.
        return admin.ModelAdmin.has_delete_permission(self, request, obj)

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


# Credits


def _credits_summary(customer_id: Any) -> str:
    """The balance as the next draw would find it, with links to the ledger and to the
    grant form."""
    state = credits.credits_state(customer_id=customer_id)
    live = [g for g in state.grants if g.state != CreditGrant.State.EXPIRED]
    ledger = reverse("admin:billing_app_creditbalance_change", args=[customer_id])
    has_row = CreditBalance.objects.filter(customer_id=customer_id).exists()
    grant = reverse("admin:billing_app_creditgrant_add") + f"?customer={customer_id}"
    found = CreditAutoTopUp.objects.select_related("pack").filter(customer_id=customer_id).first()
    return format_html(
        '<p>{} credits, from {} grant(s) pending or active. {}<a href="{}">Grant credits</a>'
        "</p><p>{}</p>",
        state.balance,
        len(live),
        format_html('<a href="{}">Grants and ledger</a> · ', ledger) if has_row else "",
        grant,
        f"Auto top-up: {found.pack} ({found.pack.credits} credits) below {found.below}, "
        f"at most {found.monthly_cap} a month."
        if found
        else "No auto top-up.",
    )


def _grants_table(grants: Iterable[CreditGrant]) -> str:
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
        "<td>{}</td><td>{}</td></tr>",
        (
            (
                grant.pk or "(made at the next draw)",
                grant.get_source_display(),
                grant.get_state_display(),
                grant.amount,
                grant.remaining,
                grant.priority,
                _when(grant.effective_at),
                _when(grant.expires_at) if grant.expires_at else "never",
                grant.reason or "-",
            )
            for grant in grants
        ),
    )
    return format_html(
        "<table><thead><tr><th>grant</th><th>source</th><th>state</th><th>amount</th>"
        "<th>left</th><th>priority</th><th>from</th><th>expires</th><th>reason</th></tr>"
        "</thead><tbody>{}</tbody></table>",
        rows,
    )


ENTRIES_SHOWN = 50


@admin.register(CreditBalance)
class CreditBalanceAdmin(_ReadOnlyAdmin):
    """A customer's credits: the balance, its grants and its ledger, shown as the next
    draw would find them (computed, nothing written). Credits are given on the grant
    form (Credit grants, Add)."""

    list_display = ["customer", "stored_balance", "valid_until"]
    list_select_related = ["customer"]
    fields = ["customer", "balance_now", "grants", "ledger"]
    readonly_fields = ["balance_now", "grants", "ledger"]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # The row's own name carries its stored balance, which may predate an expiry.
        row = self.get_object(request, unquote(object_id))
        subtitle = {"subtitle": f"Credits of {row.customer}"} if row is not None else {}
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), **subtitle}
        )

    @admin.display(description="balance (as last brought up to date)", ordering="balance")
    def stored_balance(self, row: CreditBalance) -> int:
        return row.balance

    @admin.display(description="balance now")
    def balance_now(self, row: CreditBalance) -> str:
        return _credits_summary(row.customer_id)

    @admin.display(description="grants pending or active")
    def grants(self, row: CreditBalance) -> str:
        state = credits.credits_state(customer_id=row.customer_id)
        live = [g for g in state.grants if g.state != CreditGrant.State.EXPIRED]
        return _grants_table(live) if live else "None."

    @admin.display(description="ledger (newest first)")
    def ledger(self, row: CreditBalance) -> str:
        entries = CreditEntry.objects.filter(customer_id=row.customer_id).order_by("-pk")[
            :ENTRIES_SHOWN
        ]
        if not entries:
            return "No entries yet."
        every = reverse("admin:billing_app_creditentry_changelist")
        return format_html(
            "<table><thead><tr><th>entry</th><th>at</th><th>kind</th><th>change</th>"
            "<th>grant</th><th>primitive</th><th>event</th></tr></thead><tbody>{}</tbody>"
            '</table><p>The last {} at most. <a href="{}?customer__id__exact={}">Every entry'
            "</a></p>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
                "<td>{}</td></tr>",
                (
                    (
                        entry.pk,
                        _when(entry.at),
                        entry.get_kind_display(),
                        f"{entry.delta:+d}",
                        entry.grant_id or "-",
                        entry.primitive or "-",
                        entry.event_id or "-",
                    )
                    for entry in entries
                ),
            ),
            ENTRIES_SHOWN,
            every,
            row.customer_id,
        )


@admin.register(CreditEntry)
class CreditEntryAdmin(_ReadOnlyAdmin):
    """Every change of every balance (grants, draws, refunds, expiries): a balance is the
    sum of its entries."""

    list_display = ["at", "customer", "kind", "delta", "grant", "primitive", "event_id"]
    list_filter = ["kind", "primitive"]
    list_select_related = ["customer", "grant"]
    date_hierarchy = "at"


class CreditGrantForm(forms.Form):
    """An operator's grant of credits: to whom, how many, until when, and why."""

    # Its queryset is the customer model's, known once the form is made.
    customer: Any = forms.ModelChoiceField(queryset=None, help_text="The customer's id.")
    amount = forms.IntegerField(min_value=1, max_value=2**63 - 1, help_text="Credits to give.")
    expires_at = forms.SplitDateTimeField(
        required=False,
        widget=widgets.AdminSplitDateTime,
        help_text="Empty: the credits never expire.",
    )
    priority = forms.IntegerField(
        min_value=0,
        max_value=1_000_000,
        initial=100,
        help_text="Draws take from lower priorities first, then the soonest expiry.",
    )
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), help_text="Say why.")

    def __init__(self, *args: Any, admin_site: admin.AdminSite, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field: Any = self.fields["customer"]
        field.queryset = customer_model()._default_manager.all()
        field.widget = widgets.ForeignKeyRawIdWidget(
            CreditGrant._meta.get_field("customer").remote_field, admin_site
        )


@admin.register(CreditGrant)
class CreditGrantAdmin(_BillingAdmin):
    """Credits given to customers, never edited. Adding one is an operator's grant,
    through ``metering.credits.credits_grant``, recorded with who granted it and why."""

    list_display = [
        "created_at",
        "customer",
        "source",
        "amount",
        "remaining",
        "state",
        "effective_at",
        "expires_at",
        "granted_by",
        "reason",
    ]
    list_filter = ["source", "state"]
    list_select_related = ["customer", "granted_by"]
    search_fields = ["reason", "source_ref"]
    date_hierarchy = "created_at"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        initial = {"customer": request.GET.get("customer", "")}
        form = CreditGrantForm(
            request.POST if request.method == "POST" else None,
            initial=initial,
            admin_site=self.admin_site,
        )
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                grant = credits.credits_grant(
                    customer_id=data["customer"].pk,
                    amount=data["amount"],
                    source=CreditGrant.Source.MANUAL,
                    reason=data["reason"],
                    granted_by=request.user,
                    priority=data["priority"],
                    expires_at=data["expires_at"],
                )
            except InvalidInput as error:
                for field, errors in error.fields.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                self.log_addition(request, grant, [{"added": {}}])
                self.message_user(
                    request,
                    f"{data['customer']}: +{grant.amount} credits"
                    + (f" until {_when(grant.expires_at)}." if grant.expires_at else "."),
                    messages.SUCCESS,
                )
                balance = reverse(
                    "admin:billing_app_creditbalance_change", args=[grant.customer_id]
                )
                return HttpResponseRedirect(balance)
        return TemplateResponse(
            request,
            "admin/billing_app/credit_grant.html",
            {
                **self.admin_site.each_context(request),
                "title": "Grant credits",
                "opts": self.opts,
                "form": form,
                "media": self.media + form.media,
            },
        )


@admin.register(CreditAutoTopUp)
class CreditAutoTopUpAdmin(_BillingAdmin):
    """Customers' auto top-ups, set and removed through ``credits_auto_top_up_set``: buy
    the pack when a call leaves fewer than ``below`` credits, at most ``monthly_cap`` times
    a calendar month."""

    list_display = ["customer", "pack", "below", "monthly_cap"]
    list_select_related = ["customer", "pack"]
    raw_id_fields = ["customer"]
    fields = ["customer", "pack", "below", "monthly_cap"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # One per customer: moving it to another customer is not an edit.
        return ["customer"] if obj is not None else []

    def save_model(
        self, request: HttpRequest, obj: CreditAutoTopUp, form: Any, change: bool
    ) -> None:
        try:
            saved = credits.credits_auto_top_up_set(
                customer_id=obj.customer_id,
                pack_key=obj.pack.key,
                below=obj.below,
                monthly_cap=obj.monthly_cap,
            )
        except InvalidInput as error:
            self.message_user(request, str(error), messages.ERROR)
            return
        assert saved is not None
        obj.pk = saved.pk

    def delete_model(self, request: HttpRequest, obj: CreditAutoTopUp) -> None:
        credits.credits_auto_top_up_set(customer_id=obj.customer_id, pack_key=None)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[CreditAutoTopUp]) -> None:
        for top_up in queryset:
            credits.credits_auto_top_up_set(customer_id=top_up.customer_id, pack_key=None)


@admin.register(CreditPack)
class CreditPackAdmin(_ServiceSaveAdmin):
    """Credit packs customers buy through Stripe Checkout (a one-time Stripe price)."""

    list_display = ["key", "name", "credits", "stripe_price_id", "expires_after_days", "active"]
    list_filter = ["active"]
    search_fields = ["key", "name", "stripe_price_id"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # retire a pack with "active" off: grants and top-ups point at it

    def save_with_service(self, obj: CreditPack, formsets: list[Any]) -> CreditPack:
        return credits.credit_pack_upsert(
            key=obj.key,
            name=obj.name,
            credits=obj.credits,
            stripe_price_id=obj.stripe_price_id,
            expires_after_days=obj.expires_after_days,
            active=obj.active,
        )[0]


# The admin index: billing first, in groups an operator looks for. The host's site is
# left as it is; its own apps follow, as Django orders them.

ADMIN_GROUPS = [
    ("Catalog", ["product", "plan", "accountkit", "creditpack"]),
    ("Customers & subscriptions", ["subscription", "kitassignment", "quotagrant"]),
    ("Credits", ["creditbalance", "creditgrant", "creditentry", "creditautotopup"]),
    (
        "Usage & records",
        [
            "usagecounter",
            "usageevent",
            "overagespend",
            "gaugelevel",
            "gaugeevent",
            "billingperiod",
            "usagerecord",
            "advancecharge",
        ],
    ),
    ("Operations", ["outboxmessage", "problem", "operatorkey", "tenanttoken"]),
]
_ORDER = {name: index for index, (_, names) in enumerate(ADMIN_GROUPS) for name in names}


def billing_first(get_app_list: Any) -> Any:
    """Wrap an admin site's ``get_app_list``: billing_app's models come first, in
    ``ADMIN_GROUPS`` on the index and in the sidebar, and in that order on the app's own
    page (one section there, so its title and breadcrumbs stay "Billing")."""

    def get_app_list_billing_first(request: HttpRequest, app_label: str | None = None) -> Any:
        app_list = get_app_list(request, app_label)
        ours = [app for app in app_list if app["app_label"] == "billing_app"]
        if not ours:
            return app_list
        (app,) = ours
        models = sorted(app["models"], key=_position)
        if app_label is not None:
            return [{**app, "models": models}]
        groups = []
        for index, (title, _) in enumerate(ADMIN_GROUPS):
            shown = [m for m in models if _group(m) == index]
            if shown:
                groups.append({**app, "name": f"{app['name']}: {title}", "models": shown})
        return groups + [other for other in app_list if other is not app]

    get_app_list_billing_first.billing_first = True  # type: ignore[attr-defined]
    return get_app_list_billing_first


def _model_name(model: dict[str, Any]) -> str:
    return str(model["model"]._meta.model_name)


def _group(model: dict[str, Any]) -> int:
    """Its group's index; a model no group names goes with the operations."""
    return _ORDER.get(_model_name(model), len(ADMIN_GROUPS) - 1)


def _position(model: dict[str, Any]) -> tuple[int, int]:
    name, group = _model_name(model), _group(model)
    names = ADMIN_GROUPS[group][1]
    return group, names.index(name) if name in names else len(names)


if not getattr(admin.site.get_app_list, "billing_first", False):
    admin.site.get_app_list = billing_first(admin.site.get_app_list)  # type: ignore[method-assign]
