"""The operator's console: pages render, and saves and actions go through the services."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing_app import cycles, selectors, services
from billing_app.models import (
    KitAssignment,
    OperatorKey,
    OutboxMessage,
    StripeSyncProblem,
    Subscription,
    TenantToken,
    UsageCounter,
    UsageEvent,
)
from billing_app.periods import Window

from .factories import AccountKitFactory, PlanFactory, SubscriptionFactory, UserFactory

pytestmark = pytest.mark.django_db

EDITABLE = ["accountkit", "plan", "subscription", "kitassignment", "operatorkey", "tenanttoken"]
READ_ONLY = ["usageevent", "usagecounter", "stripesyncproblem", "usagerecord", "outboxmessage"]


def url(model: str, view: str, *args) -> str:
    return reverse(f"admin:billing_app_{model}_{view}", args=args)


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def record_usage(user, primitive: str, window: Window, quantity: int) -> UsageCounter:
    """A window's counter and the one event it counts, as metering leaves them."""
    UsageEvent.objects.create(
        user=user,
        primitive=primitive,
        quantity=quantity,
        occurred_at=window.start,
        window_start=window.start,
    )
    return UsageCounter.objects.create(
        user=user,
        primitive=primitive,
        window_start=window.start,
        window_end=window.end,
        used=quantity,
    )


@pytest.fixture
def admin(db) -> Client:
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def world(db):
    """One row of every model, so the changelists have something to show."""
    kit = AccountKitFactory(key="kit-pro", allow={"seo": None, "aeo": 60})
    plan = PlanFactory(key="pro", account_kit=kit, limits={"seo": 1000, "aeo": 250})
    subscription = SubscriptionFactory(plan=plan, stripe_customer_id="cus_world")
    user = subscription.user
    services.kit_assign(user=user, kit=kit)
    operator_key, _ = services.operator_key_create(name="backend")
    tenant_token, _ = services.tenant_token_issue(user=user, name="cli")
    window = selectors.quota_window(subscription=subscription, at=timezone.now())
    counter = record_usage(user, "seo", window, 42)
    event = UsageEvent.objects.get(user=user)
    return {
        "accountkit": kit,
        "plan": plan,
        "subscription": subscription,
        "kitassignment": KitAssignment.objects.get(user=user),
        "operatorkey": operator_key,
        "tenanttoken": tenant_token,
        "usagecounter": counter,
        "usageevent": event,
        "usagerecord": cycles.follow(user=user),
        "outboxmessage": OutboxMessage.objects.create(
            kind="webhook", key="k1", payload={"type": "cycle.closed"}
        ),
        "stripesyncproblem": StripeSyncProblem.objects.create(
            stripe_subscription_id="sub_lost", reason="no_tenant", detail="Customer cus_x ..."
        ),
    }


# Every page renders


@pytest.mark.parametrize("model", EDITABLE + READ_ONLY)
def test_changelist_renders(admin, world, model):
    response = admin.get(url(model, "changelist"))
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1


@pytest.mark.parametrize("model", EDITABLE + READ_ONLY)
def test_change_page_renders(admin, world, model):
    response = admin.get(url(model, "change", world[model].pk))
    assert response.status_code == 200


@pytest.mark.parametrize("model", EDITABLE)
def test_add_page_renders(admin, model):
    assert admin.get(url(model, "add")).status_code == 200


@pytest.mark.parametrize("model", READ_ONLY)
def test_usage_cannot_be_added(admin, model):
    assert admin.get(url(model, "add")).status_code == 403


def test_changelists_need_a_staff_login(world):
    response = Client().get(url("subscription", "changelist"))
    assert response.status_code == 302
    assert "/login/" in response["Location"]


# Subscriptions


def test_subscription_change_page_shows_quotas_and_usage_of_this_window(admin, world):
    subscription = world["subscription"]
    # Usage of an earlier window is not this window's.
    this_window = world["usagecounter"]
    earlier = Window(
        this_window.window_start - timedelta(days=62),
        this_window.window_start - timedelta(days=31),
    )
    record_usage(subscription.user, "aeo", earlier, 999)

    content = admin.get(url("subscription", "change", subscription.pk)).content.decode()

    assert "<tr><td>seo</td><td>42</td><td>1000</td></tr>" in content
    assert "<tr><td>aeo</td><td>0</td><td>250</td></tr>" in content
    assert str(world["usagecounter"].window_start) in content


def test_subscription_change_page_shows_unlimited_primitives(admin, world):
    subscription = world["subscription"]
    counter = world["usagecounter"]
    window = Window(counter.window_start, counter.window_end)
    record_usage(subscription.user, "email.send", window, 3)
    content = admin.get(url("subscription", "change", subscription.pk)).content.decode()
    assert "<tr><td>email.send</td><td>3</td><td>unlimited</td></tr>" in content


def subscription_form(subscription, **changes) -> dict:
    data = {
        "user": subscription.user.pk,
        "plan": subscription.plan.pk,
        "status": subscription.status,
        "stripe_customer_id": subscription.stripe_customer_id,
        "stripe_subscription_id": subscription.stripe_subscription_id,
        "current_period_start_0": "",
        "current_period_start_1": "",
        "current_period_end_0": "",
        "current_period_end_1": "",
        "_save": "Save",
    }
    return data | changes


@pytest.fixture
def spy_subscription_set(monkeypatch):
    calls = []
    real = services.subscription_set

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(services, "subscription_set", spy)
    return calls


def test_saving_a_subscription_goes_through_the_service_and_assigns_the_plan_kit(
    admin, world, spy_subscription_set
):
    subscription = world["subscription"]
    user = subscription.user
    business_kit = AccountKitFactory(key="kit-business")
    business = PlanFactory(key="business", account_kit=business_kit)

    response = admin.post(
        url("subscription", "change", subscription.pk),
        subscription_form(
            subscription,
            plan=business.pk,
            stripe_customer_id="cus_new",
            current_period_start_0="2026-01-01",
            current_period_start_1="00:00:00",
            current_period_end_0="2026-02-01",
            current_period_end_1="00:00:00",
        ),
    )

    assert response.status_code == 302
    subscription.refresh_from_db()
    assert subscription.plan == business
    assert subscription.stripe_customer_id == "cus_new"
    assert subscription.current_period_start == datetime(2026, 1, 1, tzinfo=UTC)
    assert subscription.current_period_end == datetime(2026, 2, 1, tzinfo=UTC)
    assert selectors.kit_of(user=user) == business_kit
    assert [call["plan_key"] for call in spy_subscription_set] == ["business"]


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
    user = UserFactory()
    plan = world["plan"]

    response = admin.post(
        url("subscription", "add"),
        subscription_form(SubscriptionFactory.build(user=user, plan=plan, status="trialing")),
    )

    assert response.status_code == 302
    subscription = Subscription.objects.get(user=user)
    assert (subscription.plan, subscription.status) == (plan, "trialing")
    assert selectors.kit_of(user=user) == plan.account_kit
    assert len(spy_subscription_set) == 1


def test_a_period_ending_before_it_starts_is_an_error_not_a_crash(admin, world):
    subscription = world["subscription"]
    before = Subscription.objects.values().get(pk=subscription.pk)

    response = admin.post(
        url("subscription", "change", subscription.pk),
        subscription_form(
            subscription,
            status="canceled",
            current_period_start_0="2026-02-01",
            current_period_start_1="00:00:00",
            current_period_end_0="2026-01-01",
            current_period_end_1="00:00:00",
        ),
        follow=True,
    )

    assert response.status_code == 200
    content = response.content.decode()
    assert "errorlist" in content or 'class="error"' in content
    assert Subscription.objects.values().get(pk=subscription.pk) == before


def test_assign_plan_kit_action(admin, world):
    plan = world["plan"]
    drifted = SubscriptionFactory(plan=plan)
    services.kit_assign(user=drifted.user, kit=AccountKitFactory(key="kit-other"))
    kitless = SubscriptionFactory(plan=plan)
    untouched = SubscriptionFactory(plan=plan)

    response = admin.post(
        url("subscription", "changelist"),
        {"action": "assign_plan_kit", "_selected_action": [drifted.pk, kitless.pk]},
    )

    assert response.status_code == 302
    assert selectors.kit_of(user=drifted.user) == plan.account_kit
    assert selectors.kit_of(user=kitless.user) == plan.account_kit
    assert selectors.kit_of(user=untouched.user) is None
    assert messages_of(response) == ["Assigned the plan's kit to 2 tenants."]


@pytest.mark.parametrize(
    ("query", "found"),
    [("cus_world", True), ("cus_other", False), ("@example.com", True)],
)
def test_subscriptions_are_searchable_by_stripe_id_and_email(admin, world, query, found):
    response = admin.get(url("subscription", "changelist"), {"q": query})
    assert response.context["cl"].result_count == (1 if found else 0)


def test_subscriptions_filter_by_status(admin, world):
    SubscriptionFactory(status="canceled")
    response = admin.get(url("subscription", "changelist"), {"status__exact": "canceled"})
    assert [s.status for s in response.context["cl"].result_list] == ["canceled"]


def test_changing_the_tenant_of_a_subscription_does_not_leave_two(admin, world):
    subscription = world["subscription"]
    other = UserFactory()

    admin.post(
        url("subscription", "change", subscription.pk),
        subscription_form(subscription, user=other.pk),
    )

    # Whether the admin moves the subscription or refuses the change, one form edits one row.
    assert Subscription.objects.count() == 1


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
        data["user"] = world["subscription"].user.pk

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
def test_revoke_action_revokes(admin, world, model, record_model, tenant):
    if model == "operatorkey":
        target, key = services.operator_key_create(name="doomed")
    else:
        target, key = services.tenant_token_issue(user=tenant)
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


# Usage is read-only


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


def test_usage_counter_admin_is_view_only(admin, world):
    counter = world["usagecounter"]
    response = admin.post(url("usagecounter", "change", counter.pk), {"used": 0})
    assert response.status_code == 403
    counter.refresh_from_db()
    assert counter.used == 42


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
    real = services.kit_assign

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(services, "kit_assign", spy)
    user, first, second = UserFactory(), AccountKitFactory(), AccountKitFactory()

    response = admin.post(
        url("kitassignment", "add"), {"user": user.pk, "kit": first.pk, "_save": "Save"}
    )
    assert response.status_code == 302
    assert selectors.kit_of(user=user) == first

    assignment = KitAssignment.objects.get(user=user)
    response = admin.post(
        url("kitassignment", "change", assignment.pk),
        {"user": user.pk, "kit": second.pk, "_save": "Save"},
    )
    assert response.status_code == 302
    assert selectors.kit_of(user=user) == second
    assert KitAssignment.objects.count() == 1
    assert [call["kit"] for call in calls] == [first, second]


# Billing cycles in the admin


def test_subscription_page_shows_this_cycles_usage_as_bars(admin, world):
    subscription = world["subscription"]
    response = admin.get(url("subscription", "change", subscription.pk))
    page = response.content.decode()
    assert "usage against quotas" in page
    assert "width:200px" in page  # the bar's track, rendered here: no CDN, no script


def test_change_plan_action_asks_then_moves(admin, world):
    subscription = world["subscription"]
    PlanFactory(key="bigger", limits={"seo": 5000})
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
    statuses = sorted(subscription.user.billing_records.values_list("status", "plan__key"))
    assert statuses == [("current", "bigger"), ("recorded", "pro")]


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
