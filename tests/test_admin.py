"""The operator's console: pages render and only read, and saves and actions go through
the services."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib import admin as django_admin
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format

from billing_app.catalog import services as catalog
from billing_app.customers import selectors as customers_selectors
from billing_app.customers import services as customers
from billing_app.cycles import services as closer
from billing_app.entitlements import version_of
from billing_app.metering import credits
from billing_app.metering.selectors import usage_rollup
from billing_app.metering.services import usage_refund, usage_reserve
from billing_app.models import (
    AccountKit,
    AdvanceCharge,
    BillingPeriod,
    CreditAutoTopUp,
    CreditBalance,
    CreditEntry,
    CreditGrant,
    CreditPack,
    KitAssignment,
    OperatorKey,
    OutboxMessage,
    OverageSpend,
    Plan,
    Problem,
    Product,
    QuotaGrant,
    Subscription,
    TenantToken,
    UsageCounter,
    UsageEvent,
    UsageRecord,
)
from billing_app.outbox.services import message_add
from billing_app.problems import problem_record
from billing_app.subscriptions import services as subscriptions

from .factories import CustomerFactory, UserFactory
from .utils import messages_of, periods_of, use, writes_of

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)
EDITABLE = [
    "accountkit",
    "product",
    "plan",
    "subscription",
    "kitassignment",
    "operatorkey",
    "tenanttoken",
    "creditpack",
    "creditautotopup",
]
READ_ONLY = [
    "advancecharge",
    "usageevent",
    "usagecounter",
    "billingperiod",
    "usagerecord",
    "outboxmessage",
    "problem",
    "quotagrant",
    "creditbalance",
    "creditentry",
]
# Added through a service's form, never edited.
ADD_ONLY = ["creditgrant"]
MODELS = {
    "accountkit": AccountKit,
    "product": Product,
    "plan": Plan,
    "advancecharge": AdvanceCharge,
    "subscription": Subscription,
    "kitassignment": KitAssignment,
    "operatorkey": OperatorKey,
    "tenanttoken": TenantToken,
    "usageevent": UsageEvent,
    "usagecounter": UsageCounter,
    "billingperiod": BillingPeriod,
    "usagerecord": UsageRecord,
    "outboxmessage": OutboxMessage,
    "problem": Problem,
    "quotagrant": QuotaGrant,
    "creditbalance": CreditBalance,
    "creditentry": CreditEntry,
    "creditgrant": CreditGrant,
    "creditpack": CreditPack,
    "creditautotopup": CreditAutoTopUp,
}


def url(model: str, view: str, *args) -> str:
    return reverse(f"admin:billing_app_{model}_{view}", args=args)


@pytest.fixture
def admin(db) -> Client:
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def world(db):
    """A row of every model the admin shows: a customer a month and more into a plan, with
    a recorded period, usage, a quota grant, credits granted by an operator, a credit pack,
    keys, an outbox message and a problem."""
    now = timezone.now()
    kit = catalog.account_kit_upsert(
        key="kit-pro", name="Kit Pro", primitives={"seo": None, "aeo": 60}
    )[0]
    product = catalog.product_upsert(key="seo-suite", name="SEO suite")[0]
    plan = catalog.plan_upsert(
        key="pro",
        name="Pro",
        product_id="seo-suite",
        account_kit_id="kit-pro",
        quotas={"seo": 1000, "aeo": 250},
        features=["sso"],
        # Billed in advance: the recorded period below has its advance charge.
        prices=[
            {
                "primitive": "seo",
                "model": "graduated",
                "tiers": [
                    {"up_to": 100, "unit_amount": "0"},
                    {"up_to": None, "unit_amount": "0.5", "flat_amount": "100"},
                ],
                "included_quantity": 50,
                "payment_terms": "in_advance",
            }
        ],
        minimum_commitment="1000",
    )[0]
    customer = CustomerFactory()
    subscription = subscriptions.subscription_set(
        customer=customer, plan_key="pro", stripe_customer_id="cus_world", at=now - 40 * DAY
    )
    subscriptions.periods_advance(at=now)
    (record,) = closer.records_close(at=now)
    use(customer, 42, now)
    grant = customers.quota_grant(
        customer=customer, primitive="aeo", amount=8, reason="launch week", granted_by=UserFactory()
    )
    operator_key, _ = customers.operator_key_create(name="backend")
    tenant_token, _ = customers.tenant_token_issue(customer=customer, name="cli")
    credit_grant = credits.credits_grant(
        customer_id=customer.pk,
        amount=500,
        source="manual",
        reason="sorry for the outage",
        granted_by=UserFactory(),
        expires_at=now + 30 * DAY,
    )
    pack = credits.credit_pack_upsert(
        key="pack-1k", name="1,000 credits", credits=1000, stripe_price_id="price_pack_1k"
    )[0]
    top_up = credits.credits_auto_top_up_set(customer_id=customer.pk, pack_key="pack-1k", below=50)
    return {
        "customer": customer,
        "accountkit": kit,
        "product": product,
        "plan": plan,
        "advancecharge": AdvanceCharge.objects.get(),
        "subscription": subscription,
        "kitassignment": KitAssignment.objects.get(customer_id=customer.pk),
        "operatorkey": operator_key,
        "tenanttoken": tenant_token,
        "usagecounter": UsageCounter.objects.get(),
        "usageevent": UsageEvent.objects.get(),
        "billingperiod": record.period,
        "usagerecord": record,
        "outboxmessage": message_add(
            kind="webhook", key="k1", payload={"type": "cycle.closed", "data": {}}
        ),
        "problem": problem_record(
            kind="stripe_no_customer", subject="stripe:sub_lost", detail="Customer cus_x ..."
        ),
        "quotagrant": grant,
        "creditbalance": CreditBalance.objects.get(customer_id=customer.pk),
        "creditentry": CreditEntry.objects.get(),
        "creditgrant": credit_grant,
        "creditpack": pack,
        "creditautotopup": top_up,
    }


# Every page renders, and only reads


@pytest.mark.parametrize("model", EDITABLE + READ_ONLY + ADD_ONLY)
def test_changelist_renders(admin, world, model):
    response = admin.get(url(model, "changelist"))
    assert response.status_code == 200
    assert response.context["cl"].result_count == MODELS[model].objects.count() > 0


@pytest.mark.parametrize(
    "query",
    ["status=%00", "q=%00", "primitive=a%00b", "%00=1", "start__year=9999999999", "x__month=13"],
)
@pytest.mark.parametrize("model", EDITABLE + READ_ONLY + ADD_ONLY)
def test_a_query_no_database_can_take_is_a_400(admin, world, model, query):
    """PostgreSQL refuses a NUL in a text parameter, and a year of 10 digits overflows a
    date; Django's filters pass them on as sent."""
    response = admin.get(url(model, "changelist") + "?" + query)
    assert response.status_code == 400


@pytest.mark.parametrize("model", EDITABLE + READ_ONLY + ADD_ONLY)
def test_change_page_renders(admin, world, model):
    response = admin.get(url(model, "change", world[model].pk))
    assert response.status_code == 200


@pytest.mark.parametrize("model", EDITABLE + ADD_ONLY)
def test_add_page_renders(admin, model):
    assert admin.get(url(model, "add")).status_code == 200


@pytest.mark.parametrize("model", READ_ONLY)
def test_what_the_app_writes_cannot_be_added(admin, model):
    assert admin.get(url(model, "add")).status_code == 403


def test_changelists_need_a_staff_login(world):
    response = Client().get(url("subscription", "changelist"))
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_rendering_any_admin_page_writes_nothing(admin, world):
    pages = [reverse("admin:index")]
    for model in django_admin.site._registry:
        info = (model._meta.app_label, model._meta.model_name)
        pages.append(reverse("admin:{}_{}_changelist".format(*info)))
        pages.append(reverse("admin:{}_{}_add".format(*info)))
        row = model._default_manager.order_by("pk").first()
        if row is not None:
            pages.append(reverse("admin:{}_{}_change".format(*info), args=[row.pk]))
            pages.append(reverse("admin:{}_{}_history".format(*info), args=[row.pk]))
    assert len([p for p in pages if "/billing_app/" in p and p.endswith("/change/")]) == 20
    # The subscription page with usage on it, its grant page, and after a cancellation.
    subscription = world["subscription"]
    pages.append(url("subscription", "change", subscription.pk))
    pages.append(url("subscription", "grant", subscription.pk))
    pages.append(url("creditgrant", "add") + f"?customer={world['customer'].pk}")
    pages.append(reverse("admin:app_list", args=["billing_app"]))

    for page in pages:
        with CaptureQueriesContext(connection) as queries:
            response = admin.get(page)
        assert response.status_code in (200, 403), page
        assert writes_of(queries) == [], page

    subscriptions.subscription_set(customer=world["customer"], plan_key="pro", status="canceled")
    with CaptureQueriesContext(connection) as queries:
        response = admin.get(url("subscription", "change", subscription.pk))
    assert response.status_code == 200
    assert writes_of(queries) == []


def test_the_subscription_page_shows_the_upcoming_charges(admin, world):
    page = admin.get(url("subscription", "change", world["subscription"].pk)).content.decode()
    assert "upcoming charges" in page.lower()
    # The in-advance block of 50 seo calls at tier 1's 0 is free; the minimum of 1000 is
    # the projected total.
    assert "seo" in page and "minimum commitment top-up" in page
    assert "projected to" in page and "1000 USD" in page


# Subscriptions


def usage_rows(content: str) -> dict[str, str]:
    """primitive -> "used / quota" as the subscription page's usage table shows them."""
    return dict(re.findall(r"<tr><td>([^<]+)</td><td>([^<]+ / [^<]+)</td>", content))


def test_subscription_page_shows_the_enforced_usage_once(admin, world):
    subscription = world["subscription"]
    customer = world["customer"]
    # Usage of an earlier quota window is not this window's.
    use(customer, 999, timezone.now() - 35 * DAY, primitive="aeo")

    content = admin.get(url("subscription", "change", subscription.pk)).content.decode()

    assert usage_rows(content) == {"aeo": "0 / 258", "seo": "42 / 1000"}  # 250 + 8 granted
    assert content.lower().count("usage (as enforced)") == 1
    assert content.count("Plan in force:") == 1
    rollup = usage_rollup(customer_id=customer.pk)
    window = rollup.window
    shown = [
        date_format(timezone.localtime(t), "DATETIME_FORMAT") for t in (window.start, window.end)
    ]
    assert f"Window {shown[0]} to {shown[1]}; resets {shown[1]}</p>" in content
    assert rollup.window.end.isoformat() not in content
    assert "width:200px" in content  # the bar's track, drawn here: no CDN, no script


def test_subscription_page_shows_the_fallback_plan_in_force_after_a_cancel(admin, world, settings):
    catalog.plan_upsert(key="free", name="Free", quotas={"seo": 5, "email.send": 2})
    settings.BILLING_FALLBACK_PLAN = "free"
    subscription = subscriptions.subscription_set(
        customer=world["customer"], plan_key="pro", status="canceled"
    )

    content = admin.get(url("subscription", "change", subscription.pk)).content.decode()

    assert "Plan in force: free (canceled)." in content
    rows = usage_rows(content)
    assert rows["seo"] == "42 / 5"
    assert rows["email.send"] == "0 / 2"
    assert rows["aeo"] == "0 / unlimited"  # allowed by the kit, no quota in the free plan
    assert "/ 1000" not in content and "/ 250" not in content
    assert content.count("Plan in force:") == 1


def test_subscription_page_shows_unlimited_primitives(admin, world):
    use(world["customer"], 3, timezone.now(), primitive="email.send")
    content = admin.get(url("subscription", "change", world["subscription"].pk)).content.decode()
    assert usage_rows(content)["email.send"] == "3 / unlimited"


def test_subscription_page_lists_its_periods(admin, world):
    content = admin.get(url("subscription", "change", world["subscription"].pk)).content.decode()
    for period in periods_of(world["customer"]):
        assert date_format(timezone.localtime(period.start), "DATETIME_FORMAT") in content


def subscription_form(subscription, **changes) -> dict:
    data = {
        "customer": subscription.customer_id,
        "plan": subscription.plan_id,
        "status": subscription.status,
        "seats": subscription.seats,
        "stripe_customer_id": subscription.stripe_customer_id,
        "stripe_subscription_id": subscription.stripe_subscription_id,
        **{
            f"{prefix}-{field}": value
            for prefix in ("periods", "seat_set")
            for field, value in (
                ("TOTAL_FORMS", 0),
                ("INITIAL_FORMS", 0),
                ("MIN_NUM_FORMS", 0),
                ("MAX_NUM_FORMS", 1000),
            )
        },
        "_save": "Save",
    }
    return data | changes


@pytest.fixture
def spy_subscription_set(monkeypatch):
    calls = []
    real = subscriptions.subscription_set

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(subscriptions, "subscription_set", spy)
    return calls


def test_saving_a_subscription_goes_through_the_service_and_assigns_the_plan_kit(
    admin, world, spy_subscription_set
):
    subscription = world["subscription"]
    business_kit = catalog.account_kit_upsert(key="kit-business", name="Business")[0]
    business = catalog.plan_upsert(key="business", name="Business", account_kit_id="kit-business")[
        0
    ]

    response = admin.post(
        url("subscription", "change", subscription.pk),
        subscription_form(subscription, plan=business.pk, stripe_customer_id="cus_new", seats=3),
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    subscription.refresh_from_db()
    assert (subscription.plan, subscription.stripe_customer_id, subscription.seats) == (
        business,
        "cus_new",
        3,
    )
    assert customers_selectors.kit_of(customer=world["customer"]) == business_kit
    assert [call["plan_key"] for call in spy_subscription_set] == ["business"]
    # A plan change through the admin splits the period as any other.
    *_, old, new = periods_of(world["customer"])
    assert (old.plan.key, old.end_reason, new.plan.key) == ("pro", "plan_change", "business")


def test_saving_a_subscription_moves_status_changed_at_only_on_a_new_status(admin, world):
    subscription = world["subscription"]
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    Subscription.objects.filter(pk=subscription.pk).update(status_changed_at=long_ago)

    admin.post(url("subscription", "change", subscription.pk), subscription_form(subscription))
    subscription.refresh_from_db()
    assert subscription.status_changed_at == long_ago

    admin.post(
        url("subscription", "change", subscription.pk),
        subscription_form(subscription, status="past_due"),
    )
    subscription.refresh_from_db()
    assert subscription.status == "past_due"
    assert subscription.status_changed_at > long_ago


def test_adding_a_subscription_goes_through_the_service(admin, world, spy_subscription_set):
    customer = CustomerFactory()
    plan = world["plan"]
    form = subscription_form(world["subscription"], customer=customer.pk, status="trialing")

    response = admin.post(url("subscription", "add"), form)

    assert response.status_code == 302, response.content.decode()[:2000]
    subscription = Subscription.objects.get(customer_id=customer.pk)
    assert (subscription.plan, subscription.status) == (plan, "trialing")
    assert customers_selectors.kit_of(customer=customer) == plan.account_kit
    assert len(spy_subscription_set) == 1
    (period,) = periods_of(customer)
    assert period.start == subscription.started_at


def test_an_invalid_subscription_form_is_an_error_not_a_crash(admin, world):
    subscription = world["subscription"]
    before = Subscription.objects.values().get(pk=subscription.pk)

    response = admin.post(
        url("subscription", "change", subscription.pk),
        subscription_form(subscription, seats=0, status="nonsense"),
    )

    assert response.status_code == 200
    content = response.content.decode()
    assert "errorlist" in content
    assert Subscription.objects.values().get(pk=subscription.pk) == before


@pytest.mark.parametrize(("query", "found"), [("cus_world", True), ("cus_other", False)])
def test_subscriptions_are_searchable_by_stripe_id(admin, world, query, found):
    response = admin.get(url("subscription", "changelist"), {"q": query})
    assert response.context["cl"].result_count == (1 if found else 0)


def test_subscriptions_filter_by_status(admin, world):
    subscriptions.subscription_set(customer=CustomerFactory(), plan_key="pro", status="canceled")
    response = admin.get(url("subscription", "changelist"), {"status__exact": "canceled"})
    assert [s.status for s in response.context["cl"].result_list] == ["canceled"]


def test_the_customer_of_a_subscription_is_not_editable(admin, world):
    subscription = world["subscription"]
    other = CustomerFactory()

    admin.post(
        url("subscription", "change", subscription.pk),
        subscription_form(subscription, customer=other.pk),
    )

    # One subscription per customer: the form edits this one and cannot move it.
    assert Subscription.objects.get().customer_id == world["customer"].pk


# The catalog


def inline(prefix: str, rows: list[dict], initial: int = 0) -> dict:
    data = {
        f"{prefix}-TOTAL_FORMS": len(rows),
        f"{prefix}-INITIAL_FORMS": initial,
        f"{prefix}-MIN_NUM_FORMS": 0,
        f"{prefix}-MAX_NUM_FORMS": 1000,
    }
    for index, row in enumerate(rows):
        data.update({f"{prefix}-{index}-{field}": value for field, value in row.items()})
    return data


def test_adding_a_kit_goes_through_the_service(admin, monkeypatch):
    calls = []
    real = catalog.account_kit_upsert

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(catalog, "account_kit_upsert", spy)
    response = admin.post(
        url("accountkit", "add"),
        {
            "key": "starter",
            "name": "Starter",
            **inline(
                "primitives",
                [{"primitive": "seo", "rate_per_minute": 30}, {"primitive": "aeo"}],
            ),
            "_save": "Save",
        },
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    kit = AccountKit.objects.get(key="starter")
    assert dict(kit.primitives.values_list("primitive", "rate_per_minute")) == {
        "seo": 30,
        "aeo": None,
    }
    assert calls == [{"key": "starter", "name": "Starter", "primitives": {"seo": 30, "aeo": None}}]


def test_adding_a_plan_goes_through_the_service(admin, world, monkeypatch):
    calls = []
    real = catalog.plan_upsert

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(catalog, "plan_upsert", spy)
    response = admin.post(
        url("plan", "add"),
        {
            "key": "team",
            "name": "Team",
            "account_kit": world["accountkit"].pk,
            "stripe_price_id": "",
            "period": "month",
            "billing_cadence": "P3M",
            "currency": "usd",
            "active": "on",
            "stripe_meter_event": "",
            "product": world["product"].pk,
            "invoice_display_name": "Team (quarterly)",
            "minimum_commitment": "5000",
            "trial_days": 14,
            "trial_end_action": "stop",
            **inline(
                "prices",
                [
                    {
                        "primitive": "email.send",
                        "model": "volume",
                        "tiers": '[{"up_to": 1000, "unit_amount": "0.1"}, {"up_to": null, '
                        '"unit_amount": "0.05", "flat_amount": "10"}]',
                        "included_quantity": 0,
                        "payment_terms": "in_arrears",
                    }
                ],
            ),
            **inline(
                "quotas",
                [
                    {
                        "primitive": "seo",
                        "kind": "counter",
                        "limit": 100,
                        "per_seat": "on",
                        "overage": "block",
                    },
                    {
                        "primitive": "aeo",
                        "kind": "counter",
                        "limit": 10,
                        "overage": "bill",
                        "overage_unit_price": "0.5",
                    },
                    {"primitive": "storage", "kind": "gauge", "limit": 1000, "overage": "block"},
                ],
            ),
            **inline("features", [{"feature": "sso"}]),
            "_save": "Save",
        },
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    plan = Plan.objects.get(key="team")
    assert (plan.billing_cadence, plan.account_kit) == ("P3M", world["accountkit"])
    assert {q.primitive: (q.kind, q.limit, q.per_seat, q.overage) for q in plan.quotas.all()} == {
        "seo": ("counter", 100, True, "block"),
        "aeo": ("counter", 10, False, "bill"),
        "storage": ("gauge", 1000, False, "block"),
    }
    assert list(plan.features.values_list("feature", flat=True)) == ["sso"]
    assert (plan.product, plan.invoice_display_name, plan.minimum_commitment) == (
        world["product"],
        "Team (quarterly)",
        5000,
    )
    assert (plan.trial_days, plan.trial_end_action) == (14, "stop")
    (price,) = plan.prices.all()
    assert (price.primitive, price.model, price.payment_terms) == (
        "email.send",
        "volume",
        "in_arrears",
    )
    assert price.tiers == [
        {"up_to": 1000, "unit_amount": "0.1", "flat_amount": None},
        {"up_to": None, "unit_amount": "0.05", "flat_amount": "10"},
    ]
    assert [call["key"] for call in calls] == ["team"]


def test_a_plan_price_refused_by_the_service_is_shown_and_changes_nothing(admin, world):
    plan = world["plan"]
    before = list(plan.prices.values_list("primitive", "tiers"))
    response = admin.post(
        url("plan", "change", plan.pk),
        {
            "name": "Pro",
            "account_kit": world["accountkit"].pk,
            "stripe_price_id": "",
            "period": "month",
            "billing_cadence": "P1M",
            "currency": "usd",
            "active": "on",
            "stripe_meter_event": "",
            "trial_days": 0,
            "trial_end_action": "convert",
            **inline(
                "prices",
                [
                    {
                        "primitive": "seo",
                        "model": "graduated",
                        # Not ascending.
                        "tiers": '[{"up_to": 100, "unit_amount": "1"}, {"up_to": 50, '
                        '"unit_amount": "1"}, {"up_to": null, "unit_amount": "1"}]',
                        "included_quantity": 0,
                        "payment_terms": "in_arrears",
                    }
                ],
            ),
            **inline("quotas", []),
            **inline("features", []),
            "_save": "Save",
        },
    )
    assert response.status_code == 302
    assert any("prices.0.tiers.1.up_to" in m for m in messages_of(response))
    assert list(plan.prices.values_list("primitive", "tiers")) == before


# Keys


KEY_SHOWN = re.compile(r"\b((?:sk|tk)_[A-Za-z0-9]+\.[A-Za-z0-9]+)\b")


@pytest.mark.parametrize(
    ("model", "record_model", "scheme"),
    [("operatorkey", OperatorKey, "sk_"), ("tenanttoken", TenantToken, "tk_")],
)
def test_adding_a_key_shows_it_once_and_stores_only_its_hash(
    admin, world, model, record_model, scheme
):
    data = {"name": "from-admin", "expiry_date_0": "", "expiry_date_1": "", "_save": "Save"}
    if model == "tenanttoken":
        data["customer"] = world["customer"].pk

    response = admin.post(url(model, "add"), data)

    assert response.status_code == 302
    record = record_model.objects.get(name="from-admin")
    shown = [m for message in messages_of(response) for m in KEY_SHOWN.findall(message)]
    assert len(shown) == 1
    key = shown[0]
    assert key.startswith(scheme)
    assert record_model.objects.get_from_key(key) == record
    stored = record_model.objects.filter(pk=record.pk).values().get()
    assert all(key not in str(value) for value in stored.values())
    assert all(key.partition(".")[2] not in str(value) for value in stored.values())

    # Shown on the page the admin lands on, then never again.
    assert key in admin.get(response["Location"]).content.decode()
    assert key not in admin.get(url(model, "change", record.pk)).content.decode()
    assert key not in admin.get(url(model, "changelist")).content.decode()


def test_an_operator_key_added_with_an_expiry_date_expires(admin):
    response = admin.post(
        url("operatorkey", "add"),
        {
            "name": "temporary",
            "expiry_date_0": "2020-01-01",
            "expiry_date_1": "00:00:00",
            "_save": "Save",
        },
    )
    assert response.status_code == 302
    record = OperatorKey.objects.get(name="temporary")
    assert record.expiry_date == datetime(2020, 1, 1, tzinfo=UTC)
    (key,) = KEY_SHOWN.findall(" ".join(messages_of(response)))
    with pytest.raises(OperatorKey.DoesNotExist):
        OperatorKey.objects.get_from_key(key)


@pytest.mark.parametrize(
    ("model", "record_model"), [("operatorkey", OperatorKey), ("tenanttoken", TenantToken)]
)
def test_revoke_action_revokes(admin, world, model, record_model):
    if model == "operatorkey":
        target, key = customers.operator_key_create(name="doomed")
    else:
        target, key = customers.tenant_token_issue(customer=world["customer"])
    kept = world[model]

    response = admin.post(
        url(model, "changelist"), {"action": "revoke", "_selected_action": [target.pk]}
    )

    assert response.status_code == 302
    target.refresh_from_db()
    kept.refresh_from_db()
    assert target.revoked
    assert not kept.revoked
    with pytest.raises(record_model.DoesNotExist):
        record_model.objects.get_from_key(key)


# What the app writes is read-only here


def test_usage_event_admin_is_view_only(admin, world):
    event = world["usageevent"]
    change = url("usageevent", "change", event.pk)

    page = admin.get(change)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()

    response = admin.post(change, {"quantity": 1, "primitive": "aeo", "_save": "Save"})
    assert response.status_code == 403

    assert admin.post(url("usageevent", "add"), {"quantity": 1}).status_code == 403
    assert admin.post(url("usageevent", "delete", event.pk), {"post": "yes"}).status_code == 403
    event.refresh_from_db()
    assert (event.primitive, event.quantity) == ("seo", 42)


@pytest.mark.parametrize(
    ("model", "changes"),
    [
        ("usagecounter", {"used": 0}),
        ("billingperiod", {"end_0": "2030-01-01", "end_1": "00:00:00"}),
        ("usagerecord", {"status": "final", "usage": "{}"}),
    ],
)
def test_counters_periods_and_records_are_view_only(admin, world, model, changes):
    row = world[model]
    before = MODELS[model].objects.filter(pk=row.pk).values().get()

    assert admin.post(url(model, "change", row.pk), changes).status_code == 403
    assert admin.post(url(model, "delete", row.pk), {"post": "yes"}).status_code == 403

    assert MODELS[model].objects.filter(pk=row.pk).values().get() == before


def test_usage_event_changelist_has_a_date_hierarchy(admin, world):
    occurred = world["usageevent"].occurred_at
    response = admin.get(
        url("usageevent", "changelist"),
        {"occurred_at__year": occurred.year, "occurred_at__month": occurred.month},
    )
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1
    response = admin.get(url("usageevent", "changelist"), {"occurred_at__year": 1999})
    assert response.context["cl"].result_count == 0


# Kit assignments


def test_adding_and_changing_a_kit_assignment_goes_through_the_service(admin, monkeypatch):
    calls = []
    real = customers.kit_assign

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(customers, "kit_assign", spy)
    customer = CustomerFactory()
    first = catalog.account_kit_upsert(key="first", name="First")[0]
    second = catalog.account_kit_upsert(key="second", name="Second")[0]

    response = admin.post(
        url("kitassignment", "add"), {"customer": customer.pk, "kit": first.pk, "_save": "Save"}
    )
    assert response.status_code == 302
    assert customers_selectors.kit_of(customer=customer) == first

    assignment = KitAssignment.objects.get(customer_id=customer.pk)
    response = admin.post(
        url("kitassignment", "change", assignment.pk),
        {"customer": customer.pk, "kit": second.pk, "_save": "Save"},
    )
    assert response.status_code == 302
    assert customers_selectors.kit_of(customer=customer) == second
    assert KitAssignment.objects.count() == 1
    assert [call["kit"] for call in calls] == [first, second]

    response = admin.post(url("kitassignment", "delete", assignment.pk), {"post": "yes"})
    assert response.status_code == 302
    assert customers_selectors.kit_of(customer=customer) is None
    assert [call["kit"] for call in calls] == [first, second, None]


# Actions


def test_change_plan_action_asks_then_moves(admin, world):
    subscription = world["subscription"]
    catalog.plan_upsert(key="bigger", name="Bigger", quotas={"seo": 5000})
    changelist = url("subscription", "changelist")

    form = admin.post(changelist, {"action": "change_plan", "_selected_action": [subscription.pk]})
    assert form.status_code == 200 and b"bigger" in form.content
    assert Subscription.objects.get(pk=subscription.pk).plan.key == "pro"

    done = admin.post(
        changelist,
        {
            "action": "change_plan",
            "_selected_action": [subscription.pk],
            "plan_key": "bigger",
            "apply": "1",
        },
        follow=True,
    )
    assert "1 subscription(s) moved." in messages_of(done)
    assert Subscription.objects.get(pk=subscription.pk).plan.key == "bigger"
    *_, old, new = periods_of(world["customer"])
    assert old.end == new.start
    assert [(old.plan.key, old.end_reason), (new.plan.key, new.end_reason)] == [
        ("pro", "plan_change"),
        ("bigger", ""),
    ]


def test_change_plan_action_reports_a_bad_plan(admin, world):
    subscription = world["subscription"]
    done = admin.post(
        url("subscription", "changelist"),
        {
            "action": "change_plan",
            "_selected_action": [subscription.pk],
            "plan_key": "nope",
            "apply": "1",
        },
        follow=True,
    )
    assert any("nope" in m for m in messages_of(done))
    assert Subscription.objects.get(pk=subscription.pk).plan.key == "pro"


def test_outbox_retry_action(admin, world):
    message = world["outboxmessage"]
    OutboxMessage.objects.filter(pk=message.pk).update(state="failed", attempts=8)
    admin.post(
        url("outboxmessage", "changelist"),
        {"action": "retry", "_selected_action": [message.pk]},
    )
    message.refresh_from_db()
    assert (message.state, message.attempts) == ("pending", 0)


def test_a_closing_problem_is_left_to_the_scheduler_and_can_be_dismissed(admin, world):
    problem = problem_record(kind="cycle_close", subject="period:1", detail="boom")
    done = admin.post(
        url("problem", "changelist"),
        {"action": "retry", "_selected_action": [problem.pk]},
        follow=True,
    )
    assert "period:1: billing_close_cycles retries it." in messages_of(done)
    assert Problem.objects.filter(pk=problem.pk).exists()

    response = admin.post(url("problem", "delete", problem.pk), {"post": "yes"})
    assert response.status_code == 302
    assert not Problem.objects.filter(pk=problem.pk).exists()


# The index: billing first, grouped; the host's apps as Django shows them


def sections(content: str) -> list[str]:
    return re.findall(r'<caption>\s*<a href="[^"]*" class="section"[^>]*>([^<]+)</a>', content)


def test_the_index_shows_billing_first_in_groups(admin, world):
    content = admin.get(reverse("admin:index")).content.decode()
    shown = sections(content)
    assert shown[:5] == [
        "Billing: Catalog",
        "Billing: Customers &amp; subscriptions",
        "Billing: Credits",
        "Billing: Usage &amp; records",
        "Billing: Operations",
    ]
    assert "Authentication and Authorization" in shown[5:]
    groups = {app["name"]: app for app in admin.get(reverse("admin:index")).context["app_list"]}
    names = [m["object_name"] for m in groups["Billing: Customers & subscriptions"]["models"]]
    assert names == ["Subscription", "KitAssignment", "QuotaGrant"]
    catalog = [m["object_name"] for m in groups["Billing: Catalog"]["models"]]
    assert catalog == ["Product", "Plan", "AccountKit", "CreditPack"]
    credit = [m["object_name"] for m in groups["Billing: Credits"]["models"]]
    assert credit == ["CreditBalance", "CreditGrant", "CreditEntry", "CreditAutoTopUp"]
    operations = [m["object_name"] for m in groups["Billing: Operations"]["models"]]
    assert operations == ["OutboxMessage", "Problem", "OperatorKey", "TenantToken"]
    listed = [m["object_name"] for app in groups.values() for m in app["models"]]
    registered = [m.__name__ for m in django_admin.site._registry]
    assert sorted(listed) == sorted(registered)  # every model once, the host's too


def test_the_index_has_no_api_keys_of_djangorestframework_api_key(admin, world):
    """Its "API keys" page issues keys the API refuses: only the billing keys are shown."""
    from rest_framework_api_key.models import APIKey

    response = admin.get(reverse("admin:index"))

    assert not django_admin.site.is_registered(APIKey)
    listed = {m["model"] for app in response.context["app_list"] for m in app["models"]}
    assert APIKey not in listed
    assert "/admin/rest_framework_api_key/" not in response.content.decode()
    assert admin.get("/admin/rest_framework_api_key/apikey/add/").status_code == 404


def test_the_hosts_apps_keep_their_pages(admin, world):
    response = admin.get(reverse("admin:app_list", args=["auth"]))
    assert response.status_code == 200
    assert sections(response.content.decode()) == ["Authentication and Authorization"]
    groups = reverse("admin:auth_group_changelist")
    assert groups in admin.get(reverse("admin:index")).content.decode()
    assert admin.get(groups).status_code == 200


def test_the_billing_app_page_is_one_section_in_group_order(admin, world):
    response = admin.get(reverse("admin:app_list", args=["billing_app"]))
    assert response.status_code == 200
    (app,) = response.context["app_list"]
    assert app["name"] == "Billing"
    names = [m["object_name"] for m in app["models"]]
    assert names[:5] == ["Product", "Plan", "AccountKit", "CreditPack", "Subscription"]
    assert names[-4:] == ["OutboxMessage", "Problem", "OperatorKey", "TenantToken"]


def test_a_staff_user_sees_only_the_groups_it_may_use(world):
    from django.contrib.auth.models import Permission

    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_plan"))
    client = Client()
    client.force_login(staff)
    assert sections(client.get(reverse("admin:index")).content.decode()) == ["Billing: Catalog"]
    # Dismissing a problem takes the delete permission, as any delete does.
    problem = world["problem"]
    assert client.post(url("problem", "delete", problem.pk), {"post": "yes"}).status_code == 403
    assert Problem.objects.filter(pk=problem.pk).exists()


# One-off quota grants


def grant_form(**changes) -> dict:
    return {"primitive": "seo", "amount": 50, "reason": "launch week", **changes}


def test_the_subscription_page_links_to_the_grant_page(admin, world):
    subscription = world["subscription"]
    content = admin.get(url("subscription", "change", subscription.pk)).content.decode()
    assert f'href="{url("subscription", "grant", subscription.pk)}"' in content


def test_the_grant_page_shows_the_usage_and_a_form(admin, world):
    response = admin.get(url("subscription", "grant", world["subscription"].pk))
    assert response.status_code == 200
    content = response.content.decode()
    assert usage_rows(content) == {"aeo": "0 / 258", "seo": "42 / 1000"}
    assert [value for value, _ in response.context["form"].fields["primitive"].choices] == [
        "aeo",
        "seo",
    ]
    assert 'name="csrfmiddlewaretoken"' in content
    for field in ("primitive", "amount", "reason"):
        assert f'<label for="id_{field}"' in content


def test_granting_goes_through_the_service_with_who_and_why(admin, world, monkeypatch):
    calls = []
    real = customers.quota_grant

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(customers, "quota_grant", spy)
    subscription, customer = world["subscription"], world["customer"]

    response = admin.post(url("subscription", "grant", subscription.pk), grant_form())

    assert response.status_code == 302
    assert response["Location"] == url("subscription", "change", subscription.pk)
    operator = response.wsgi_request.user
    assert calls == [
        {
            "customer": customer,
            "primitive": "seo",
            "amount": 50,
            "reason": "launch week",
            "granted_by": operator,
        }
    ]
    assert usage_rollup(customer_id=customer.pk).quotas["seo"] == 1050  # binds at once
    grant = QuotaGrant.objects.get(primitive="seo")
    assert (grant.granted_by, grant.reason, grant.amount) == (operator, "launch week", 50)
    assert any("+50 seo" in m for m in messages_of(response))
    # Listed on the subscription's page: who, how much, why.
    content = admin.get(response["Location"]).content.decode()
    assert "launch week" in content and "+50" in content and str(operator) in content


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": "many"}, "amount"),
        ({"amount": 2**63}, "amount"),  # past what the form checks: the service refuses
        ({"reason": "   "}, "reason"),
        ({"primitive": "email.send"}, "primitive"),  # no quota to raise
        ({"primitive": ""}, "primitive"),
    ],
)
def test_a_bad_grant_is_a_form_error_and_changes_nothing(admin, world, changes, field):
    customer = world["customer"]
    before = (QuotaGrant.objects.count(), version_of(customer.pk))

    response = admin.post(
        url("subscription", "grant", world["subscription"].pk), grant_form(**changes)
    )

    assert response.status_code == 200
    assert response.context["form"].errors[field]
    assert 'class="errorlist' in response.content.decode()
    assert (QuotaGrant.objects.count(), version_of(customer.pk)) == before


def test_granting_needs_the_explicit_permission(world):
    from django.contrib.auth.models import Permission

    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_subscription", "change_subscription"])
    )
    client = Client()
    client.force_login(staff)
    subscription = world["subscription"]
    page = url("subscription", "grant", subscription.pk)

    change = client.get(url("subscription", "change", subscription.pk)).content.decode()
    assert page not in change
    assert client.get(page).status_code == 403
    assert client.post(page, grant_form()).status_code == 403

    staff.user_permissions.add(Permission.objects.get(codename="add_quotagrant"))
    client.force_login(staff)
    assert client.post(page, grant_form()).status_code == 302
    assert QuotaGrant.objects.filter(granted_by=staff).count() == 1


def test_the_grant_page_of_an_unknown_subscription_is_404(admin, world):
    assert admin.get(url("subscription", "grant", 10**9)).status_code == 404
    assert admin.post(url("subscription", "grant", 10**9), grant_form()).status_code == 404
    assert QuotaGrant.objects.count() == 1


def test_grants_are_listed_read_only(admin, world):
    grant = world["quotagrant"]
    response = admin.get(url("quotagrant", "changelist"))
    assert response.status_code == 200
    content = response.content.decode()
    assert "launch week" in content and str(grant.granted_by) in content
    before = QuotaGrant.objects.values().get(pk=grant.pk)
    assert admin.post(url("quotagrant", "change", grant.pk), {"amount": 1}).status_code == 403
    assert admin.post(url("quotagrant", "delete", grant.pk), {"post": "yes"}).status_code == 403
    assert QuotaGrant.objects.values().get(pk=grant.pk) == before


# Credits: granted by an operator through the service, the balance and its ledger read-only


def credit_form(whom, **changes) -> dict:
    return {
        "customer": whom.pk,
        "amount": 250,
        "expires_at_0": "",
        "expires_at_1": "",
        "priority": 50,
        "reason": "migration from the old system",
        **changes,
    }


def test_the_subscription_page_shows_the_credits_and_links_to_the_grant_form(admin, world):
    customer = world["customer"]
    content = admin.get(url("subscription", "change", world["subscription"].pk)).content.decode()
    assert "500 credits, from 1 grant(s) pending or active." in content
    assert f'href="{url("creditgrant", "add")}?customer={customer.pk}"' in content
    assert f'href="{url("creditbalance", "change", customer.pk)}"' in content


def test_the_grant_form_is_filled_with_the_customer_it_was_opened_for(admin, world):
    customer = world["customer"]
    response = admin.get(url("creditgrant", "add"), {"customer": customer.pk})
    assert response.status_code == 200
    assert str(response.context["form"]["customer"].value()) == str(customer.pk)
    content = response.content.decode()
    assert 'name="csrfmiddlewaretoken"' in content
    for field in ("customer", "amount", "expires_at_0", "priority", "reason"):
        assert f'id="id_{field}"' in content


def test_granting_credits_goes_through_the_service_with_who_and_why(admin, world, monkeypatch):
    calls = []
    real = credits.credits_grant

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(credits, "credits_grant", spy)
    customer = world["customer"]
    expiry = (timezone.now() + 10 * DAY).replace(microsecond=0, second=0)
    local = timezone.localtime(expiry)

    response = admin.post(
        url("creditgrant", "add"),
        credit_form(customer, expires_at_0=f"{local:%Y-%m-%d}", expires_at_1=f"{local:%H:%M:%S}"),
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    assert response["Location"] == url("creditbalance", "change", customer.pk)
    operator = response.wsgi_request.user
    assert calls == [
        {
            "customer_id": customer.pk,
            "amount": 250,
            "source": "manual",
            "reason": "migration from the old system",
            "granted_by": operator,
            "priority": 50,
            "expires_at": expiry,
        }
    ]
    grant = CreditGrant.objects.get(reason="migration from the old system")
    assert (grant.granted_by, grant.amount, grant.expires_at, grant.source) == (
        operator,
        250,
        expiry,
        "manual",
    )
    assert credits.balance_of(customer_id=customer.pk) == 750  # usable at once
    assert any("+250 credits until" in m for m in messages_of(response))
    # The balance page: the new balance, the grant with its reason, its ledger entry.
    content = admin.get(response["Location"]).content.decode()
    assert "750 credits, from 2 grant(s) pending or active." in content
    assert "migration from the old system" in content and "<td>+250</td>" in content


def test_the_balance_page_shows_draws_and_refunds_in_its_ledger(admin, world):
    customer = world["customer"]
    catalog.plan_upsert(key="pro", name="Pro", credit_costs={"aeo": 7})
    usage_reserve(customer_id=customer.pk, primitive="aeo", quantity=2)
    failed = usage_reserve(customer_id=customer.pk, primitive="aeo")
    usage_refund(reservation=failed)

    content = admin.get(url("creditbalance", "change", customer.pk)).content.decode()

    assert "486 credits" in content  # 500 - 14 - 7 + 7
    ledger = re.findall(
        r"<td>(Grant|Draw|Refund of a failed call&#x27;s draw)</td><td>([+-]\d+)", content
    )
    assert ledger == [
        ("Refund of a failed call&#x27;s draw", "+7"),
        ("Draw", "-7"),
        ("Draw", "-14"),
        ("Grant", "+500"),
    ]
    listed = admin.get(url("creditentry", "changelist"), {"customer__id__exact": customer.pk})
    assert listed.context["cl"].result_count == 4


def test_the_credits_shown_are_computed_and_rendering_them_writes_nothing(admin, world, clock):
    """A plan grant not made yet, and a grant past its expiry, show as the next draw would
    find them; showing them makes and expires nothing."""
    customer = CustomerFactory()
    catalog.plan_upsert(key="monthly-credits", name="Credits", credits={"per_period": 1000})
    subscription = subscriptions.subscription_set(customer=customer, plan_key="monthly-credits")
    credits.credits_grant(
        customer_id=customer.pk,
        amount=40,
        source="promotion",
        reason="launch",
        expires_at=timezone.now() + DAY,
    )
    # Into the next billing period: its plan grant is not made until something draws.
    clock.set(timezone.now() + 40 * DAY)
    subscriptions.periods_advance(at=timezone.now())
    admin.force_login(UserFactory(is_staff=True, is_superuser=True))  # the old session expired
    before = (
        CreditGrant.objects.filter(customer_id=customer.pk).count(),
        CreditEntry.objects.count(),
    )

    for page in (
        url("subscription", "change", subscription.pk),
        url("creditbalance", "change", customer.pk),
    ):
        with CaptureQueriesContext(connection) as queries:
            content = admin.get(page).content.decode()
        assert writes_of(queries) == [], page
        assert "1000 credits, from 1 grant(s) pending or active." in content
    assert "(made at the next draw)" in content and "launch" not in content
    assert "<title>Credits of " in content
    after = (
        CreditGrant.objects.filter(customer_id=customer.pk).count(),
        CreditEntry.objects.count(),
    )
    assert after == before
    # The next draw makes what was shown.
    credits.credits_refresh(customer_id=customer.pk)
    assert CreditBalance.objects.get(customer_id=customer.pk).balance == 1000


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": "many"}, "amount"),
        ({"amount": 2**63}, "amount"),
        ({"reason": "   "}, "reason"),
        ({"priority": -1}, "priority"),
        ({"customer": "999999999"}, "customer"),
        ({"customer": "not-a-key"}, "customer"),
        ({"expires_at_0": "2020-01-01", "expires_at_1": "00:00:00"}, "expires_at"),  # past
        ({"expires_at_0": "2020-13-45", "expires_at_1": "00:00:00"}, "expires_at"),
    ],
)
def test_a_bad_credit_grant_is_a_form_error_and_changes_nothing(admin, world, changes, field):
    customer = world["customer"]
    before = (CreditGrant.objects.count(), CreditEntry.objects.count(), version_of(customer.pk))

    response = admin.post(url("creditgrant", "add"), credit_form(customer, **changes))

    assert response.status_code == 200
    assert response.context["form"].errors[field]
    assert 'class="errorlist' in response.content.decode()
    after = (CreditGrant.objects.count(), CreditEntry.objects.count(), version_of(customer.pk))
    assert after == before


def test_granting_credits_needs_the_add_permission(world):
    from django.contrib.auth.models import Permission

    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_creditgrant", "view_creditbalance"])
    )
    client = Client()
    client.force_login(staff)
    customer = world["customer"]

    assert client.get(url("creditgrant", "add")).status_code == 403
    assert client.post(url("creditgrant", "add"), credit_form(customer)).status_code == 403
    assert CreditGrant.objects.count() == 1

    staff.user_permissions.add(Permission.objects.get(codename="add_creditgrant"))
    client.force_login(staff)
    assert client.post(url("creditgrant", "add"), credit_form(customer)).status_code == 302
    assert CreditGrant.objects.filter(granted_by=staff).count() == 1


def test_credit_grants_balances_and_entries_are_never_edited(admin, world):
    grant, entry = world["creditgrant"], world["creditentry"]
    rows = (
        CreditGrant.objects.values().get(pk=grant.pk),
        CreditEntry.objects.values().get(pk=entry.pk),
        CreditBalance.objects.values().get(pk=world["customer"].pk),
    )
    for model, pk in (
        ("creditgrant", grant.pk),
        ("creditentry", entry.pk),
        ("creditbalance", world["customer"].pk),
    ):
        assert admin.post(url(model, "change", pk), {"amount": 1, "balance": 9}).status_code == 403
        assert admin.post(url(model, "delete", pk), {"post": "yes"}).status_code == 403
    assert admin.get(url("creditentry", "add")).status_code == 403
    assert rows == (
        CreditGrant.objects.values().get(pk=grant.pk),
        CreditEntry.objects.values().get(pk=entry.pk),
        CreditBalance.objects.values().get(pk=world["customer"].pk),
    )
    content = admin.get(url("creditgrant", "changelist")).content.decode()
    assert "sorry for the outage" in content and str(grant.granted_by) in content


def test_a_credit_pack_is_saved_through_the_service(admin, monkeypatch):
    calls = []
    real = credits.credit_pack_upsert

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(credits, "credit_pack_upsert", spy)
    response = admin.post(
        url("creditpack", "add"),
        {
            "key": "pack-5k",
            "name": "5,000 credits",
            "credits": 5000,
            "stripe_price_id": "price_pack",
            "expires_after_days": 365,
            "active": "on",
            "_save": "Save",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    pack = CreditPack.objects.get(key="pack-5k")
    assert (pack.credits, pack.stripe_price_id, pack.expires_after_days) == (
        5000,
        "price_pack",
        365,
    )
    assert [call["key"] for call in calls] == ["pack-5k"]


def test_an_auto_top_up_is_set_and_removed_through_the_service(admin, world, monkeypatch):
    calls = []
    real = credits.credits_auto_top_up_set

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(credits, "credits_auto_top_up_set", spy)
    other = CustomerFactory()
    pack = world["creditpack"]

    response = admin.post(
        url("creditautotopup", "add"),
        {"customer": other.pk, "pack": pack.pk, "below": 300, "monthly_cap": 2, "_save": "Save"},
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    top_up = CreditAutoTopUp.objects.get(customer_id=other.pk)
    assert (top_up.pack, top_up.below, top_up.monthly_cap) == (pack, 300, 2)
    assert calls == [
        {"customer_id": other.pk, "pack_key": "pack-1k", "below": 300, "monthly_cap": 2}
    ]
    summary = admin.get(url("subscription", "change", world["subscription"].pk)).content
    assert "Auto top-up: pack-1k (1000 credits) below 50, at most 1 a month." in summary.decode()

    response = admin.post(url("creditautotopup", "delete", top_up.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not CreditAutoTopUp.objects.filter(customer_id=other.pk).exists()
    assert calls[-1] == {"customer_id": other.pk, "pack_key": None}


def test_a_pack_without_a_stripe_price_cannot_be_an_auto_top_up(admin, world):
    unpriced = credits.credit_pack_upsert(key="unpriced", name="Unpriced", credits=5)[0]
    other = CustomerFactory()
    response = admin.post(
        url("creditautotopup", "add"),
        {"customer": other.pk, "pack": unpriced.pk, "below": 3, "monthly_cap": 1, "_save": "Save"},
    )
    assert any("not a credit pack on sale" in m for m in messages_of(response))
    assert not CreditAutoTopUp.objects.filter(customer_id=other.pk).exists()


def test_overage_spend_is_shown_read_only(admin, world):
    catalog.plan_upsert(
        key="capped", name="Capped", quotas={"seo": 1}, overage={"seo": "2"}, overage_spend_cap="9"
    )
    capped = CustomerFactory()
    subscriptions.subscription_set(customer=capped, plan_key="capped")
    usage_reserve(customer_id=capped.pk, primitive="seo", quantity=3)
    spend = OverageSpend.objects.get(customer_id=capped.pk)
    assert spend.spent == 4

    for page in (url("overagespend", "changelist"), url("overagespend", "change", spend.pk)):
        with CaptureQueriesContext(connection) as queries:
            response = admin.get(page)
        assert response.status_code == 200
        assert writes_of(queries) == []
    assert admin.get(url("overagespend", "add")).status_code == 403
    assert admin.post(url("overagespend", "change", spend.pk), {"spent": 0}).status_code == 403
    assert OverageSpend.objects.get(pk=spend.pk).spent == 4
