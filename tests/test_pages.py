"""The customer's billing page (/billing/account/): what it shows, what its forms do, and
that every failure comes back to the page as a message."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from djstripe.models import Customer

from billing_app.conf import customer_is_user
from billing_app.metering.selectors import usage_rollup
from billing_app.models import Subscription
from billing_app.stripe import calls as stripe_calls
from billing_app.subscriptions import services as subscriptions

from .factories import AccountKitFactory, CustomerFactory, PlanFactory, UserFactory
from .utils import (
    make_invoice,
    messages_of,
    refuse,
    session_client,
    state_of,
    stripe_customer_for,
    subscribe_on_stripe,
    use,
    writes_of,
)

pytestmark = pytest.mark.django_db

PAGE = "/billing/account/"
CHECKOUT = PAGE + "checkout/"
PORTAL = PAGE + "portal/"
CANCEL = PAGE + "cancel/"
REACTIVATE = PAGE + "reactivate/"
STRIPE_DOWN = "Stripe could not do this now; nothing was changed."
# The default resolver counts no seat of a canceled subscription: the organisation's
# members then have no customer, and the page says so (test_canceled_organisation_...).
CANCELED_ORGANISATION = "a canceled organisation's members resolve to no customer"


@pytest.fixture
def free(db):
    kit = AccountKitFactory(key="kit_free", allow={"seo": None, "aeo": None, "email.send": None})
    return PlanFactory(key="free", name="Free", account_kit=kit, limits={"seo": 10, "aeo": 5})


@pytest.fixture
def pro(db):
    kit = AccountKitFactory(key="kit_pro", allow={"seo": None, "aeo": None})
    return PlanFactory(
        key="pro",
        name="Pro",
        stripe_price_id="price_pro",
        account_kit=kit,
        limits={"seo": 1000, "aeo": 250},
    )


@pytest.fixture
def on_free(customer, free):
    subscriptions.subscription_set(customer=customer, plan_key="free", status="active")
    return customer


@pytest.fixture
def me(on_free):
    """The customer's browser: signed in, as the customer or as a holder of its seat."""
    return session_client(on_free)


def text(response) -> str:
    """The page as a person reads it: tags dropped, whitespace collapsed."""
    html = re.sub(r"<(style|script)\b.*?</\1>", " ", response.content.decode(), flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def bars(response) -> dict[str, tuple[int, int]]:
    """Each usage bar's primitive -> (value, max) of its <progress>."""
    found = {}
    for meter in response.content.decode().split('<li class="billing-meter')[1:]:
        name = re.search(r'id="billing-meter-\d+">([^<]+)</span>', meter)[1]
        if bar := re.search(r'<progress max="(\d+)" value="(\d+)"', meter):
            found[name] = (int(bar[2]), int(bar[1]))
    return found


def messages_on(client: Client) -> list[str]:
    """The messages the next page shows."""
    return re.findall(r'class="billing-message[^"]*" role="\w+">([^<]+)<', page_html(client))


def page_html(client: Client) -> str:
    response = client.get(PAGE)
    assert response.status_code == 200
    return unescape(response.content.decode())


# --- who sees it ---------------------------------------------------------------------


def test_signed_out_goes_to_login_and_back(client):
    response = client.get(PAGE)
    assert response.status_code == 302
    assert response["Location"] == f"{django_settings.LOGIN_URL}?next={PAGE}"


@pytest.mark.parametrize("path", [CHECKOUT, PORTAL, CANCEL, REACTIVATE])
def test_signed_out_post_goes_to_login_and_calls_nothing(client, path, stripe_stub):
    response = client.post(path, {"plan": "pro", "when": "now"})
    assert response.status_code == 302
    assert response["Location"].endswith(f"?next={PAGE}")
    assert stripe_stub.requests == []


def test_signed_in_without_a_customer_is_told_so(client, free):
    """A user who is no customer and holds no seat (organisations) has no billing here."""
    if customer_is_user():
        pytest.skip("every user is a customer when customers are users")
    client.force_login(UserFactory())
    response = client.get(PAGE)
    assert response.status_code == 403
    assert "no billing account" in text(response)


# --- what it shows -------------------------------------------------------------------


def test_shows_plan_status_and_renewal(me, on_free):
    response = me.get(PAGE)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = text(response)
    assert "Your plan Free Active" in page
    period_end = Subscription.objects.get(customer=on_free).periods.first().end
    assert f"Renews on {period_end:%-d %B %Y}" in page


def test_bars_are_the_numbers_enforcement_uses(me, on_free):
    now = timezone.now()
    use(on_free, 4, now)
    use(on_free, 5, now, primitive="aeo")
    rollup = usage_rollup(customer_id=on_free.pk)

    response = me.get(PAGE)

    assert bars(response) == {
        "aeo": (rollup.usage["aeo"], rollup.quotas["aeo"]),
        "seo": (rollup.usage["seo"], rollup.quotas["seo"]),
    }
    assert bars(response) == {"aeo": (5, 5), "seo": (4, 10)}
    page = text(response)
    assert "4 of 10 used, 6 left" in page
    assert "5 of 5 used, 0 left" in page
    assert "email.send 0 used, unlimited" in page  # in the kit, no quota: no bar
    resets = f"Resets {rollup.window.end:%-d %B %Y, %H:%M} UTC"
    assert page.count(resets) == 3
    html = response.content.decode()
    assert f'datetime="{rollup.window.end.isoformat()}"' in html
    # The full one says so; the other does not.
    assert page.count("Quota used up: calls are refused until it resets.") == 1


def test_gauges_show_their_level_and_limit_not_reset_by_a_window(me, on_free):
    """A gauge is a level (storage in use), not usage in a window: its bar is the level
    against the plan's limit, labelled as a level, with no reset date."""
    from billing_app.catalog import services as catalog
    from billing_app.client import billing

    kit = {"seo": None, "aeo": None, "email.send": None, "storage": None, "seats.used": None}
    catalog.account_kit_upsert(key="kit_free", name="Free kit", primitives=kit)
    catalog.plan_upsert(key="free", name="Free", gauges={"storage": 100, "seats.used": 3})
    gauges = billing.for_customer(on_free)
    gauges.gauge("storage").add(42)
    gauges.gauge("seats.used").set(3)
    use(on_free, 4, timezone.now())
    rollup = usage_rollup(customer_id=on_free.pk)

    response = me.get(PAGE)

    assert bars(response) == {
        "aeo": (0, 5),
        "seo": (4, 10),
        "seats.used": (rollup.levels["seats.used"], rollup.level_limits["seats.used"]),
        "storage": (rollup.levels["storage"], rollup.level_limits["storage"]),
    }
    assert bars(response)["storage"] == (42, 100)
    page = text(response)
    assert "storage Level 42 of 100, 58 free" in page
    assert "seats.used Level 3 of 3, 0 free" in page
    assert page.count("Resets ") == 3  # the counters' (email.send has no quota), not the gauges'
    assert page.count("A level: it is not reset by a window.") == 2
    assert page.count("At the limit: increases are refused until the level goes down.") == 1
    assert 'billing-meter billing-meter--gauge billing-meter--full"' in response.content.decode()


def test_a_full_bar_is_what_the_metered_view_refuses_at(me, on_free):
    """Used up through the demo's metered view: the page shows the bar full exactly when
    the view starts refusing."""
    statuses = [me.post("/demo/seo/").status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]

    response = me.get(PAGE)
    assert bars(response)["seo"] == (10, 10)
    assert "10 of 10 used, 0 left" in text(response)
    assert 'billing-meter billing-meter--full"' in response.content.decode()


def test_overage_past_the_quota_is_shown_as_billed(me, on_free, free):
    free.quotas.filter(primitive="seo").update(overage="bill", overage_unit_price=1)
    subscriptions.subscription_set(customer=on_free, plan_key="free")  # bumps the version
    use(on_free, 13, timezone.now())

    response = me.get(PAGE)

    assert bars(response)["seo"] == (10, 10)  # a bar cannot go past its end
    assert "13 of 10 used, 0 left" in text(response)
    assert "Past the quota: 3 billed as overage." in text(response)


def test_a_zero_quota_is_a_full_bar(me, on_free, free):
    free.quotas.filter(primitive="aeo").update(limit=0)
    subscriptions.subscription_set(customer=on_free, plan_key="free")

    assert bars(me.get(PAGE))["aeo"] == (1, 1)


def test_an_ended_subscription_says_why_calls_are_refused(me, on_free):
    if not customer_is_user():
        pytest.skip(CANCELED_ORGANISATION)
    subscriptions.subscription_set(customer=on_free, plan_key="free", status="canceled")

    page = text(me.get(PAGE))

    assert "Canceled" in page
    assert "The subscription has ended." in page
    assert "Cancel subscription" not in page  # nothing left to cancel
    assert "Ended on" in page


def test_past_due_warns_until_when_calls_go_on(me, on_free):
    subscriptions.subscription_set(customer=on_free, plan_key="free", status="past_due")
    grace_until = Subscription.objects.get(customer=on_free).status_changed_at + timedelta(days=3)

    page = text(me.get(PAGE))

    assert "Free Past Due" in page
    assert (
        "Your last payment failed. Update your payment method before "
        f"{grace_until:%-d %B %Y} to keep your plan." in page
    )
    assert "0 of 10 used, 10 left" in page  # its quotas still apply


def test_no_subscription(client, free, pro, customer):
    if not customer_is_user():
        pytest.skip("an organisation's page is reached through a seat of its subscription")
    client.force_login(customer)

    page = text(client.get(PAGE))

    assert "You have no subscription yet." in page
    assert "Subscribe to Pro" in page
    assert "Cancel subscription" not in page


def test_plans_to_buy_are_the_active_priced_ones_but_the_current(me, free, pro):
    PlanFactory(key="hidden", name="Hidden", stripe_price_id="price_hidden", active=False)
    PlanFactory(key="unpriced", name="Unpriced")
    free.stripe_price_id = "price_free"
    free.save()

    html = page_html(me)

    assert re.findall(r'name="plan" value="([^"]+)"', html) == ["pro"]
    assert "Subscribe to Pro" in html
    assert "1000 seo a month" in html


def test_a_live_stripe_subscription_changes_plan_in_the_portal(me, on_free, pro, stripe_stub):
    subscribe_on_stripe(stripe_stub, on_free)

    html = page_html(me)

    assert 'name="plan"' not in html
    assert "To change your plan, choose" in html
    assert 'action="/billing/account/portal/"' in html


def test_invoices_newest_first_with_pdf_links(me, on_free, pro, stripe_stub):
    stripe_customer, _ = subscribe_on_stripe(stripe_stub, on_free)
    older = make_invoice(stripe_stub, stripe_customer, created=1_767_225_600)
    newer = make_invoice(stripe_stub, stripe_customer, created=1_769_904_000, status="open")
    stranger = stripe_customer_for(stripe_stub, CustomerFactory())
    Customer.sync_from_stripe_data(stranger)
    make_invoice(stripe_stub, stranger, created=1_769_904_100)

    response = me.get(PAGE)

    html = response.content.decode()
    rows = re.findall(r"<tr>\s*<th scope=\"row\">(.*?)</tr>", html, flags=re.S)
    assert len(rows) == 2
    assert newer.id in rows[0] and older.id in rows[1]
    assert "https://pay.stripe.com/invoice/1767225600/pdf" in rows[1]
    assert "49.00 USD" in rows[1] and "paid" in rows[1] and "1 Jan 2026" in rows[1]
    assert "open" in rows[0]


def test_rendering_writes_nothing(me, on_free, pro, stripe_stub):
    stripe_customer, _ = subscribe_on_stripe(stripe_stub, on_free)
    make_invoice(stripe_stub, stripe_customer, created=1_767_225_600)
    use(on_free, 3, timezone.now())
    me.get(PAGE)  # the session is loaded once
    requests = len(stripe_stub.requests)

    with CaptureQueriesContext(connection) as queries:
        response = me.get(PAGE)

    assert response.status_code == 200
    assert writes_of(queries) == []
    assert len(stripe_stub.requests) == requests  # nor asks Stripe


def test_every_form_carries_a_csrf_token_and_a_label(me, on_free, pro):
    html = page_html(me)

    forms = re.findall(r"<form\b.*?</form>", html, flags=re.S)
    assert len(forms) == 2  # subscribe to pro, cancel
    for form in forms:
        assert 'method="post"' in form
        assert 'name="csrfmiddlewaretoken"' in form
        assert re.search(r"<button[^>]*>\s*\S", form)  # a button with words on it
    for field_id in re.findall(r'<input type="radio"[^>]*id="([^"]+)"', html):
        assert f'<label for="{field_id}">' in html


def test_the_page_needs_no_javascript(me, on_free, pro):
    html = page_html(me)
    assert "<script" not in html
    assert not re.search(r"<[^>]+\son[a-z]+=", html)  # no inline handlers either


def test_head_is_answered_and_other_methods_are_not(me):
    assert me.head(PAGE).status_code == 200
    assert me.post(PAGE).status_code == 405
    assert me.get(CANCEL).status_code == 405


def test_templates_can_be_overridden_by_the_project(me, settings, tmp_path):
    (tmp_path / "billing_app" / "account").mkdir(parents=True)
    (tmp_path / "billing_app" / "account" / "usage.html").write_text(
        "<p>Our own usage: {% for meter in meters %}{{ meter.primitive }}={{ meter.left }} "
        "{% endfor %}</p>"
    )
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]

    page = text(me.get(PAGE))

    assert "Our own usage: aeo=5 email.send=None seo=10" in page
    assert "Your plan Free" in page  # the rest is the app's


# --- checkout ------------------------------------------------------------------------


def test_checkout_sends_the_customer_to_stripe(me, on_free, pro, stripe_stub):
    stripe_stub.price("price_pro")

    response = me.post(CHECKOUT, {"plan": "pro"})

    assert response.status_code == 303
    (created,) = stripe_stub.calls("POST", "/v1/checkout/sessions")
    session = stripe_stub.objects[response["Location"].rsplit("/", 1)[1]]
    assert response["Location"] == session["url"]
    assert created.params["line_items"] == [{"price": "price_pro", "quantity": "1"}]
    assert created.params["success_url"] == f"http://testserver{PAGE}?checkout=success"
    assert created.params["cancel_url"] == f"http://testserver{PAGE}?checkout=canceled"
    assert created.params["client_reference_id"] == str(on_free.pk)


def test_coming_back_from_checkout_says_what_happens(me, on_free):
    assert "shows here as soon as Stripe confirms" in text(me.get(PAGE + "?checkout=success"))
    assert "Checkout was canceled" in text(me.get(PAGE + "?checkout=canceled"))
    assert "Checkout" not in text(me.get(PAGE + "?checkout=<b>x</b>"))


@pytest.mark.parametrize("path", ["/v1/checkout/sessions", "/v1/customers"])
def test_checkout_stripe_failure_is_a_message_on_the_page(me, on_free, pro, stripe_stub, path):
    refuse(stripe_stub, "POST", path, "Request req_1: internal error at api-17")
    before = state_of(on_free)

    response = me.post(CHECKOUT, {"plan": "pro"})

    assert response.status_code == 303
    assert response["Location"] == PAGE
    assert messages_on(me) == [STRIPE_DOWN]
    assert messages_on(me) == []  # shown once
    assert state_of(on_free) == before


def test_checkout_html_502_from_a_proxy_is_a_message(me, on_free, pro, stripe_stub):
    stripe_stub.price("price_pro")
    stripe_stub.fail("POST", "/v1/checkout/sessions", "html")

    response = me.post(CHECKOUT, {"plan": "pro"})

    assert response["Location"] == PAGE
    assert messages_on(me) == [STRIPE_DOWN]


def test_checkout_with_a_live_stripe_subscription_is_a_409_message(me, on_free, pro, stripe_stub):
    subscribe_on_stripe(stripe_stub, on_free)
    requests = len(stripe_stub.requests)

    response = me.post(CHECKOUT, {"plan": "pro"})

    assert response["Location"] == PAGE
    assert messages_on(me) == ["You have a live subscription already: change its plan instead."]
    assert len(stripe_stub.requests) == requests


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "plan: This field is required."),
        ({"plan": "no such plan"}, "plan: Enter a valid “slug”"),
        ({"plan": "missing"}, "That plan cannot be bought online."),
        ({"plan": "free"}, "That plan cannot be bought online."),  # no price
    ],
)
def test_checkout_bad_input_is_a_message_and_calls_nothing(me, pro, stripe_stub, data, message):
    response = me.post(CHECKOUT, data)

    assert response["Location"] == PAGE
    (shown,) = messages_on(me)
    assert shown.startswith(message)
    assert stripe_stub.requests == []


def test_checkout_of_an_inactive_plan_is_refused(me, pro, stripe_stub):
    pro.active = False
    pro.save()
    me.post(CHECKOUT, {"plan": "pro"})
    assert messages_on(me) == ["That plan cannot be bought online."]
    assert stripe_stub.requests == []


# --- portal --------------------------------------------------------------------------


def test_manage_payment_opens_the_portal(me, on_free, pro, stripe_stub):
    stripe_customer, _ = subscribe_on_stripe(stripe_stub, on_free)

    response = me.post(PORTAL)

    assert response.status_code == 303
    assert response["Location"].startswith("https://billing.stripe.com/")
    (created,) = stripe_stub.calls("POST", "/v1/billing_portal/sessions")
    assert created.params == {
        "customer": stripe_customer["id"],
        "return_url": f"http://testserver{PAGE}",
    }


def test_manage_payment_without_a_stripe_customer_is_a_409_message(me, stripe_stub):
    assert "Manage payment" not in page_html(me)

    me.post(PORTAL)

    assert messages_on(me) == ["There is no Stripe customer yet: subscribe through Checkout first."]
    assert stripe_stub.requests == []


def test_manage_payment_stripe_failure_is_a_message(me, on_free, pro, stripe_stub):
    subscribe_on_stripe(stripe_stub, on_free)
    stripe_stub.fail("POST", "/v1/billing_portal/sessions", "disconnect")

    assert me.post(PORTAL)["Location"] == PAGE
    assert messages_on(me) == [STRIPE_DOWN]


# --- cancel and reactivate -----------------------------------------------------------


def test_cancel_at_period_end_then_reactivate_without_stripe(me, on_free, stripe_stub):
    response = me.post(CANCEL, {"when": "end"})

    assert response.status_code == 303 and response["Location"] == PAGE
    html = page_html(me)
    assert "Your subscription will end at the end of the current period." in html
    assert Subscription.objects.get(customer=on_free).cancel_at_period_end is True
    assert "Keep my subscription" in html
    assert 'value="end"' not in html  # already ending then: only "now" is left
    assert "Ends on" in html

    me.post(REACTIVATE)

    assert messages_on(me) == ["Your subscription continues."]
    assert Subscription.objects.get(customer=on_free).cancel_at_period_end is False
    assert stripe_stub.requests == []


def test_cancel_now_without_stripe(me, on_free):
    response = me.post(CANCEL, {"when": "now"})

    assert response.status_code == 303 and response["Location"] == PAGE
    assert messages_of(response) == ["Your subscription is canceled."]
    assert Subscription.objects.get(customer=on_free).status == "canceled"


def test_canceled_organisation_members_are_told_there_is_no_account(me, on_free):
    if customer_is_user():
        pytest.skip("a user is its own customer, canceled or not")
    me.post(CANCEL, {"when": "now"})

    response = me.get(PAGE)

    assert response.status_code == 403
    assert "no billing account" in text(response)


def test_cancel_on_stripe(me, on_free, pro, stripe_stub):
    _, sub = subscribe_on_stripe(stripe_stub, on_free)

    me.post(CANCEL, {"when": "end"})

    assert messages_on(me) == ["Your subscription will end at the end of the current period."]
    assert stripe_stub.objects[sub["id"]]["cancel_at_period_end"] is True
    assert Subscription.objects.get(customer=on_free).cancel_at_period_end is True

    me.post(REACTIVATE)

    assert stripe_stub.objects[sub["id"]]["cancel_at_period_end"] is False
    assert Subscription.objects.get(customer=on_free).cancel_at_period_end is False


def test_cancel_stripe_failure_is_a_message_and_changes_nothing(me, on_free, pro, stripe_stub):
    _, sub = subscribe_on_stripe(stripe_stub, on_free)
    refuse(stripe_stub, "DELETE", f"/v1/subscriptions/{sub['id']}", "internal error")
    before = state_of(on_free)

    me.post(CANCEL, {"when": "now"})

    assert messages_on(me) == [STRIPE_DOWN]
    assert state_of(on_free) == before


def test_stripe_accepting_what_cannot_be_applied_yet_is_a_warning(
    me, on_free, pro, stripe_stub, monkeypatch
):
    subscribe_on_stripe(stripe_stub, on_free)
    monkeypatch.setattr("billing_app.stripe.calls.subscription_apply", lambda *args, **kwargs: None)

    me.post(CANCEL, {"when": "end"})

    html = page_html(me)
    assert "billing-message--warning" in html
    assert "Stripe accepted the change" in html


@pytest.mark.parametrize("data", [{}, {"when": "later"}])
def test_cancel_bad_input_is_a_message_and_changes_nothing(me, on_free, data):
    before = state_of(on_free)

    me.post(CANCEL, data)

    (shown,) = messages_on(me)
    assert shown.startswith("when: ")
    assert state_of(on_free) == before


def test_nothing_to_reactivate_is_a_409_message(me, on_free):
    me.post(REACTIVATE)
    assert messages_on(me) == ["The subscription is not set to cancel."]


def test_nothing_to_cancel_is_a_409_message(me, on_free):
    if not customer_is_user():
        pytest.skip(CANCELED_ORGANISATION)
    me.post(CANCEL, {"when": "now"})

    response = me.post(CANCEL, {"when": "now"})

    assert messages_of(response) == [
        "Your subscription is canceled.",
        "There is no subscription to cancel.",
    ]


# --- CSRF, transactions, projects without messages -----------------------------------


@pytest.mark.parametrize(("path", "data"), [(CHECKOUT, {"plan": "pro"}), (CANCEL, {"when": "now"})])
def test_posts_need_the_csrf_token(on_free, pro, stripe_stub, path, data):
    browser = session_client(on_free)
    browser.handler.enforce_csrf_checks = True
    before = state_of(on_free)

    assert browser.post(path, data).status_code == 403
    assert stripe_stub.requests == []
    assert state_of(on_free) == before

    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page_html(browser))[1]
    assert browser.post(path, {**data, "csrfmiddlewaretoken": token}).status_code == 303


@pytest.mark.parametrize(("path", "data"), [(CHECKOUT, {"plan": "pro"}), (CANCEL, {"when": "now"})])
def test_posts_are_csrf_checked_without_the_middleware(on_free, pro, settings, path, data):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "Csrf" not in m]
    browser = session_client(on_free)
    browser.handler.enforce_csrf_checks = True

    assert browser.post(path, data).status_code == 403


@pytest.mark.django_db(transaction=True)
def test_stripe_is_called_outside_the_request_transaction(
    on_free, pro, stripe_stub, atomic_requests, monkeypatch
):
    stripe_stub.price("price_pro")
    atomic = []

    def watch(function):
        def watched(*args, **kwargs):
            atomic.append(transaction.get_connection().in_atomic_block)
            return function(*args, **kwargs)

        return watched

    monkeypatch.setattr(stripe_calls, "checkout_create", watch(stripe_calls.checkout_create))
    monkeypatch.setattr("billing_app.pages.usage_rollup", watch(usage_rollup))
    browser = session_client(on_free)

    assert browser.get(PAGE).status_code == 200
    assert atomic == [True]  # the page itself runs in the request's transaction

    assert browser.post(CHECKOUT, {"plan": "pro"}).status_code == 303
    assert atomic == [True, False]


def test_without_the_messages_framework_the_page_shows_the_error(me, on_free, pro, settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "MessageMiddleware" not in m]
    settings.TEMPLATES = [
        {
            **settings.TEMPLATES[0],
            "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
        }
    ]
    response = me.post(PORTAL)

    assert response.status_code == 409
    assert "There is no Stripe customer yet" in text(response)
    assert "Your plan Free" in text(response)


# --- credits -------------------------------------------------------------------------

CREDITS_CHECKOUT = PAGE + "credits/checkout/"


@pytest.fixture
def on_credits(customer, free):
    """On a plan where seo costs 3 credits, with a promotion and a grant still to come."""
    from billing_app.catalog.services import plan_upsert
    from billing_app.metering.credits import credits_grant

    plan_upsert(key="free", name="Free", credit_costs={"seo": 3})
    subscriptions.subscription_set(customer=customer, plan_key="free", status="active")
    now = timezone.now()
    credits_grant(
        customer_id=customer.pk,
        amount=100,
        source="promotion",
        reason="launch",
        expires_at=now + timedelta(days=10),
    )
    credits_grant(
        customer_id=customer.pk,
        amount=50,
        source="promotion",
        reason="later",
        effective_at=now + timedelta(days=2),
    )
    return customer


def test_credits_show_the_balance_costs_and_grants_with_their_expiry(on_credits):
    from billing_app.metering.services import usage_reserve

    usage_reserve(customer_id=on_credits.pk, primitive="seo", quantity=2)
    me = session_client(on_credits)

    response = me.get(PAGE)
    page = text(response)

    assert "Credits 94 credits left" in page  # 100 - 2 x 3; the later grant not yet
    assert "1 seo costs 3 credits" in page
    rows = re.findall(
        r"<tr>\s*<td>(.*?)</td>\s*<td>(\d+)</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>\s*</tr>",
        response.content.decode(),
        flags=re.S,
    )
    shown = [
        (re.sub(r"<[^>]+>", "", a).split(" (")[0], b, c, re.sub(r"<[^>]+>", "", d))
        for a, b, c, d in rows
    ]
    expiry = timezone.localtime(timezone.now() + timedelta(days=10))
    assert shown == [
        ("Promotion", "100", "94", f"{expiry:%-d %B %Y, %H:%M} UTC"),
        ("Promotion", "50", "-", "Never"),
    ]
    assert "(from " in rows[1][0]


def test_no_credits_section_where_credits_play_no_part(me, on_free):
    assert "Credits" not in text(me.get(PAGE))


def test_a_credit_pack_is_bought_through_checkout(on_credits, stripe_stub):
    from billing_app.metering.credits import credit_pack_upsert

    stripe_stub.price("price_pack", unit_amount=900, type="one_time", recurring=None)
    credit_pack_upsert(key="small", name="Small pack", credits=500, stripe_price_id="price_pack")
    credit_pack_upsert(key="unpriced", name="Not on sale", credits=5)
    me = session_client(on_credits)
    assert "Buy Small pack (500 credits)" in text(me.get(PAGE))
    assert "Not on sale" not in text(me.get(PAGE))

    response = me.post(CREDITS_CHECKOUT, {"pack": "small"})

    assert response.status_code == 303
    (created,) = stripe_stub.calls("POST", "/v1/checkout/sessions")
    assert (
        response["Location"] == stripe_stub.objects[response["Location"].rsplit("/", 1)[1]]["url"]
    )
    assert created.params["mode"] == "payment"
    assert created.params["metadata"]["billing_credit_pack"] == "small"
    assert created.params["success_url"] == f"http://testserver{PAGE}?checkout=credits"
    assert "credits show here as soon as Stripe confirms" in text(
        me.get(PAGE + "?checkout=credits")
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"pack": "nope"}, "'nope' is not a credit pack on sale."),
        ({}, "pack: This field is required."),
    ],
)
def test_buying_an_unknown_pack_is_a_message_and_calls_nothing(
    on_credits, stripe_stub, data, message
):
    me = session_client(on_credits)
    response = me.post(CREDITS_CHECKOUT, data)
    assert messages_of(response) == [message]
    assert stripe_stub.requests == []


def test_rendering_the_credits_writes_nothing(on_credits, clock):
    """Past the first grant's expiry and the second's start: shown as a draw would find
    them, and nothing is expired or started by showing them."""
    clock.set(timezone.now() + timedelta(days=11))
    me = session_client(on_credits)
    me.get(PAGE)  # the session is loaded once

    with CaptureQueriesContext(connection) as queries:
        page = text(me.get(PAGE))

    assert writes_of(queries) == []
    assert "Credits 50 credits left" in page


# --- the overage spend cap -----------------------------------------------------------


def test_the_overage_spend_against_its_cap_is_what_enforcement_counts(customer):
    from billing_app.catalog.services import plan_upsert
    from billing_app.exceptions import SpendCapReached
    from billing_app.metering.services import usage_reserve

    plan_upsert(
        key="capped",
        name="Capped",
        quotas={"seo": 2},
        overage={"seo": "250.5"},
        overage_spend_cap="1002",
    )
    subscriptions.subscription_set(customer=customer, plan_key="capped", status="active")
    me = session_client(customer)
    usage_reserve(customer_id=customer.pk, primitive="seo", quantity=5)  # 3 past: 751.5

    page = text(me.get(PAGE))

    assert "Overage billed until" in page
    assert "7.52 USD of your 10.02 USD cap." in page  # 751.5 cents, shown to the cent
    assert "refused until it resets" not in page
    usage_reserve(customer_id=customer.pk, primitive="seo")  # 1002: the cap
    with pytest.raises(SpendCapReached):
        usage_reserve(customer_id=customer.pk, primitive="seo")
    page = text(me.get(PAGE))
    assert (
        "10.02 USD of your 10.02 USD cap. Calls past a quota are refused until it resets." in page
    )


def test_no_spend_line_without_a_cap(me, on_free):
    assert "Overage billed" not in text(me.get(PAGE))
