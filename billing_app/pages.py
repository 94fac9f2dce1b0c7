"""The customer's billing page, ``/billing/account/``: server-rendered from templates the
host project can override (``billing_app/account.html`` and the parts it includes), with
plain HTML forms that work without JavaScript.

GET only reads: the same usage rollup as enforcement (``metering.selectors.usage_rollup``),
the subscription, the credits as the next draw would find them
(``metering.credits.credits_state``), the plans and credit packs to buy and the invoices.
Each POST makes one Stripe call (``stripe.calls``), outside any database transaction
whatever ``ATOMIC_REQUESTS`` says, and either sends the customer on to Stripe (Checkout,
the billing portal) or back to the page with what happened as a message: a refusal (409),
bad input (400) or Stripe failing (502) is shown on the page, never as an error page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST, require_safe
from djstripe.settings import djstripe_settings

from .api.errors import status_of
from .catalog.selectors import plan_list
from .customers.resolvers import resolve_customer
from .exceptions import BillingError, CustomerRequired, InvalidInput, StripeNotApplied
from .metering.credits import credits_state
from .metering.selectors import UsageRollup, usage_rollup
from .models import CreditGrant, CreditPack, Plan, Subscription
from .stripe import calls as stripe_calls
from .subscriptions.selectors import invoices_of, period_at, subscription_get

ACCOUNT_TEMPLATE = "billing_app/account.html"
NO_ACCOUNT_TEMPLATE = "billing_app/no_account.html"
INVOICES_SHOWN = 12

CHECKOUT_NOTICES = {
    "success": (
        messages.SUCCESS,
        "Thank you. Your new plan shows here as soon as Stripe confirms the payment.",
    ),
    "canceled": (messages.INFO, "Checkout was canceled: nothing changed."),
    "credits": (
        messages.SUCCESS,
        "Thank you. Your credits show here as soon as Stripe confirms the payment.",
    ),
}


@dataclass(frozen=True)
class Meter:
    """One metered primitive as the page shows it: what the current window used, of what
    limit (None: unlimited), and whether use past the limit is billed instead of refused.
    A gauge's ``used`` is its level now, which no window resets."""

    primitive: str
    used: int
    limit: int | None
    billed: bool = False
    gauge: bool = False

    @property
    def left(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.used, 0)

    @property
    def over(self) -> int:
        return 0 if self.limit is None else max(self.used - self.limit, 0)

    @property
    def full(self) -> bool:
        return self.limit is not None and self.used >= self.limit

    @property
    def bar_max(self) -> int:
        """A ``<progress>`` needs a max above zero: a zero quota is a bar that is full."""
        return max(self.limit or 0, 1)

    @property
    def bar_value(self) -> int:
        if self.limit == 0:
            return 1
        return min(self.used, self.bar_max)

    @property
    def percent(self) -> int:
        return self.bar_value * 100 // self.bar_max


@dataclass(frozen=True)
class InvoiceRow:
    id: str
    number: str
    created: datetime | None
    status: str
    amount: str
    pdf_url: str | None
    hosted_url: str | None


def meters_of(rollup: UsageRollup) -> list[Meter]:
    quotas = rollup.entitlement.quotas
    return [
        Meter(
            primitive=primitive,
            used=rollup.usage.get(primitive, 0),
            limit=rollup.quotas.get(primitive),
            billed=bool(primitive in quotas and quotas[primitive].billed),
        )
        for primitive in rollup.primitives()
    ] + [
        Meter(
            primitive=primitive,
            used=rollup.levels.get(primitive, 0),
            limit=rollup.level_limits.get(primitive),
            gauge=True,
        )
        for primitive in rollup.gauges()
    ]


def money(amount: int | None, currency: str | None) -> str:
    """Stripe's minor units as an amount people read: ``4900, "usd"`` -> ``49.00 USD``."""
    if amount is None:
        return ""
    code = (currency or "").upper()
    if code.lower() in djstripe_settings.ZERO_DECIMAL_CURRENCIES:
        return f"{amount:,} {code}"
    return f"{amount / 100:,.2f} {code}".strip()


def minor_units(amount: Decimal, currency: str) -> str:
    """An amount in minor units with decimals as people read it: ``Decimal("1250.5")``,
    ``"usd"`` -> ``12.51 USD``."""
    code = currency.upper()
    if currency.lower() in djstripe_settings.ZERO_DECIMAL_CURRENCIES:
        return f"{amount.quantize(Decimal(1)):,} {code}"
    return f"{(amount / 100).quantize(Decimal('0.01')):,} {code}"


@dataclass(frozen=True)
class Spend:
    """The window's billed overage against the plan's spend cap: past it, calls that would
    add overage are refused."""

    spent: str
    cap: str
    full: bool


def spend_of(rollup: UsageRollup, plan: Plan | None) -> Spend | None:
    if rollup.spent is None or rollup.spend_cap is None:
        return None
    currency = plan.currency if plan is not None else "usd"
    return Spend(
        spent=minor_units(rollup.spent, currency),
        cap=minor_units(rollup.spend_cap, currency),
        full=rollup.spent >= rollup.spend_cap,
    )


def invoices_shown(customer: Any) -> list[InvoiceRow]:
    shown = []
    for invoice in invoices_of(customer=customer)[:INVOICES_SHOWN]:
        data = invoice.stripe_data or {}
        shown.append(
            InvoiceRow(
                id=invoice.id,
                number=data.get("number") or invoice.id,
                created=invoice.created,
                status=data.get("status") or "",
                amount=money(data.get("total"), data.get("currency")),
                pdf_url=data.get("invoice_pdf"),
                hosted_url=data.get("hosted_invoice_url"),
            )
        )
    return shown


@dataclass(frozen=True)
class Credits:
    """The customer's credits as the next metered call would find them: the balance, the
    grants it draws on (pending or active, in the order it draws), what each primitive
    costs, and the packs on sale."""

    balance: int
    grants: list[CreditGrant]
    costs: dict[str, int]
    packs: list[CreditPack]


def credits_of(customer: Any, rollup: UsageRollup) -> Credits | None:
    """None when credits play no part for this customer: no grant ever, and no primitive
    of the plan in force costs credits."""
    costs = dict(sorted(rollup.entitlement.credit_costs.items()))
    state = credits_state(customer_id=customer.pk)
    if (
        not costs
        and not state.grants
        and not CreditGrant.objects.filter(customer=customer).exists()
    ):
        return None
    return Credits(
        balance=state.balance,
        grants=[grant for grant in state.grants if grant.state != CreditGrant.State.EXPIRED],
        costs=costs,
        packs=list(CreditPack.objects.filter(active=True).exclude(stripe_price_id="")),
    )


def live_stripe_subscription(subscription: Subscription | None) -> bool:
    """Checkout would make a second Stripe subscription: a plan change goes through the
    billing portal instead."""
    return bool(subscription and subscription.stripe_subscription_id and not subscription.ended)


def plans_to_buy(current: str | None) -> list[Plan]:
    return [
        plan
        for plan in plan_list().filter(active=True).exclude(stripe_price_id="")
        if plan.key != current
    ]


def account_context(customer: Any) -> dict[str, Any]:
    now = timezone.now()
    rollup = usage_rollup(customer_id=customer.pk, at=now)
    entitlement = rollup.entitlement
    subscription = subscription_get(customer=customer)
    live = subscription if subscription is not None and not subscription.ended else None
    plan = subscription.plan if subscription else None
    plan_in_force = plan
    if plan is not None and entitlement.plan != plan.key:
        plan_in_force = plan_list().filter(key=entitlement.plan).first()
    live_stripe = live_stripe_subscription(subscription)
    return {
        "customer": customer,
        "subscription": subscription,
        "period": period_at(customer=customer, at=now) if subscription else None,
        "plan": plan,
        # The plan whose quotas apply: the fallback plan when the subscription is not usable.
        "plan_in_force": plan_in_force,
        "inactive": entitlement.inactive_reason(now),
        "grace_until": entitlement.grace_until,
        "window": rollup.window,
        "meters": meters_of(rollup),
        "spend": spend_of(rollup, plan_in_force),
        "credits": credits_of(customer, rollup),
        "plans": [] if live_stripe else plans_to_buy(live.plan.key if live else None),
        "live_stripe_subscription": live_stripe,
        "can_manage_payment": bool(subscription and subscription.stripe_customer_id),
        "can_cancel": live is not None,
        "can_cancel_at_end": live is not None and not live.cancel_at_period_end,
        "can_reactivate": live is not None and live.cancel_at_period_end,
        "invoices": invoices_shown(customer),
    }


# --- the views ---------------------------------------------------------------------


def _customer(request: HttpRequest) -> Any | HttpResponse:
    """The request's customer, or the answer to give instead: the login page for someone
    signed out, a page saying why for someone signed in with no billing account here."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        after = request.get_full_path() if request.method == "GET" else _page_url(request)
        return redirect_to_login(after)
    try:
        return resolve_customer(request)
    except BillingError as error:
        message = (
            "Your account has no billing account here."
            if isinstance(error, CustomerRequired)
            else error.message
        )
        return render(request, NO_ACCOUNT_TEMPLATE, {"message": message}, status=403)


def _page_url(request: HttpRequest, **query: str) -> str:
    namespace = request.resolver_match.namespace if request.resolver_match else "billing"
    url = reverse(f"{namespace}:account")
    return f"{url}?{urlencode(query)}" if query else url


def _see_other(url: str) -> HttpResponseRedirect:
    response = HttpResponseRedirect(url)
    response.status_code = 303  # the browser follows a POST's answer with a GET
    return response


def _back(
    request: HttpRequest, customer: Any, level: int, text: str, status: int = 200
) -> HttpResponse:
    """Back to the page with ``text`` shown: through Django's messages and a redirect
    (reloading the page then does not post again), or, in a project without the messages
    framework, by rendering the page here with the message."""
    if hasattr(request, "_messages"):
        messages.add_message(request, level, text)
        return _see_other(_page_url(request))
    context = account_context(customer)
    context["notices"] = [{"level_tag": messages.DEFAULT_TAGS[level], "message": text}]
    return render(request, ACCOUNT_TEMPLATE, context, status=status)


def _refused(request: HttpRequest, customer: Any, error: BillingError) -> HttpResponse:
    if isinstance(error, StripeNotApplied):
        return _back(request, customer, messages.WARNING, error.message, 202)
    text = error.message
    if isinstance(error, InvalidInput):
        text = " ".join(message for messages_ in error.fields.values() for message in messages_)
    return _back(request, customer, messages.ERROR, text, status_of(error))


@require_safe
def account(request: HttpRequest) -> HttpResponse:
    customer = _customer(request)
    if isinstance(customer, HttpResponse):
        return customer
    context = account_context(customer)
    notice = CHECKOUT_NOTICES.get(request.GET.get("checkout", ""))
    if notice is not None:
        context["notices"] = [{"level_tag": messages.DEFAULT_TAGS[notice[0]], "message": notice[1]}]
    return render(request, ACCOUNT_TEMPLATE, context)


def _action(view: Any) -> Any:
    """A POST that calls Stripe: CSRF-checked (even where the host dropped the middleware)
    and outside any transaction (Stripe is never called holding one)."""
    return transaction.non_atomic_requests(csrf_protect(require_POST(view)))


class CheckoutForm(forms.Form):
    plan = forms.SlugField(max_length=64)


class CreditPackForm(forms.Form):
    pack = forms.SlugField(max_length=64)


class CancelForm(forms.Form):
    when = forms.ChoiceField(choices=[("end", "At the end of the period"), ("now", "Now")])


def _form_error(form: forms.Form) -> str:
    return " ".join(
        f"{name}: {message}" for name, errors in form.errors.items() for message in errors
    )


@_action
def checkout(request: HttpRequest) -> HttpResponse:
    customer = _customer(request)
    if isinstance(customer, HttpResponse):
        return customer
    form = CheckoutForm(request.POST)
    if not form.is_valid():
        return _back(request, customer, messages.ERROR, _form_error(form), 400)
    plan = plan_list().filter(key=form.cleaned_data["plan"], active=True).first()
    if plan is None or not plan.stripe_price_id:
        text = "That plan cannot be bought online."
        return _back(request, customer, messages.ERROR, text, 400)
    try:
        url = stripe_calls.checkout_create(
            customer=customer,
            price_id=plan.stripe_price_id,
            success_url=request.build_absolute_uri(_page_url(request, checkout="success")),
            cancel_url=request.build_absolute_uri(_page_url(request, checkout="canceled")),
        )
    except BillingError as error:
        return _refused(request, customer, error)
    return _see_other(url)


@_action
def credits_checkout(request: HttpRequest) -> HttpResponse:
    """Buy a credit pack through Stripe Checkout; the webhook gives the credits once paid."""
    customer = _customer(request)
    if isinstance(customer, HttpResponse):
        return customer
    form = CreditPackForm(request.POST)
    if not form.is_valid():
        return _back(request, customer, messages.ERROR, _form_error(form), 400)
    try:
        url = stripe_calls.credit_pack_checkout_create(
            customer=customer,
            pack_key=form.cleaned_data["pack"],
            success_url=request.build_absolute_uri(_page_url(request, checkout="credits")),
            cancel_url=request.build_absolute_uri(_page_url(request, checkout="canceled")),
        )
    except BillingError as error:
        return _refused(request, customer, error)
    return _see_other(url)


@_action
def portal(request: HttpRequest) -> HttpResponse:
    customer = _customer(request)
    if isinstance(customer, HttpResponse):
        return customer
    try:
        url = stripe_calls.portal_create(
            customer=customer, return_url=request.build_absolute_uri(_page_url(request))
        )
    except BillingError as error:
        return _refused(request, customer, error)
    return _see_other(url)


@_action
def cancel(request: HttpRequest) -> HttpResponse:
    customer = _customer(request)
    if isinstance(customer, HttpResponse):
        return customer
    form = CancelForm(request.POST)
    if not form.is_valid():
        return _back(request, customer, messages.ERROR, _form_error(form), 400)
    when = form.cleaned_data["when"]
    try:
        subscription = stripe_calls.subscription_cancel(customer=customer, when=when)
    except BillingError as error:
        return _refused(request, customer, error)
    if subscription.ended:
        text = "Your subscription is canceled."
    else:
        text = "Your subscription will end at the end of the current period."
    return _back(request, customer, messages.SUCCESS, text)


@_action
def reactivate(request: HttpRequest) -> HttpResponse:
    customer = _customer(request)
    if isinstance(customer, HttpResponse):
        return customer
    try:
        stripe_calls.subscription_reactivate(customer=customer)
    except BillingError as error:
        return _refused(request, customer, error)
    return _back(request, customer, messages.SUCCESS, "Your subscription continues.")
