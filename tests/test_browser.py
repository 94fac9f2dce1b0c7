"""The demo in a browser, as a person uses it: Chromium (Debian's ``chromium``, driven by
Playwright) against the demo project served by gunicorn with two worker processes, on a
migrated SQLite database of its own, with Stripe the stand-in (``tests/stripe_stub.py``)
served from this process on loopback. Nothing leaves the machine: the browser may reach
the demo only, and Stripe's pages are answered by the test.

Slow (the demo's ``migrate`` takes a minute and more), so they run once: in the
PostgreSQL run of the default settings (``scripts/test``), or when asked for with
``-m browser``. ``BILLING_SCREENSHOTS=docs/images`` saves the docs' screenshots.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .stripe_stub import StripeStub

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Only loopback is reached: other names resolve to nothing, and anything not on
    # loopback would go through a proxy that is not there.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
]
STRIPE_PAGES = {"checkout.stripe.com", "billing.stripe.com"}
# Waits are bounded: an element, a navigation, the server coming up.
WAIT_MS = 15_000
SERVER_START_S = 60


@dataclass
class Demo:
    url: str
    keys: dict[str, str]
    stripe: StripeStub
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def wait_until_serving(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        assert server.poll() is None, f"gunicorn exited:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(url + "/", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"gunicorn did not answer in {SERVER_START_S}s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Any:
    """The demo as ``scripts/demo`` sets it up (migrate, demo_seed), served by gunicorn,
    its Stripe the stand-in, the plan ``pro`` sold at the stand-in's price ``price_pro``."""
    folder = tmp_path_factory.mktemp("demo")
    stripe = StripeStub()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": f"sqlite:///{folder / 'demo.sqlite3'}",
        "STRIPE_API_HOST": stripe.serve(),
        "SECRET_KEY": "browser-tests",
        "DEBUG": "true",  # as scripts/demo serves it: the admin's styles come with it
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    run(["migrate", "--no-input", "-v", "0"], env)
    keys = dict(re.findall(r"export (\w+)=(\S+)", run(["demo_seed"], env)))
    stripe.price("price_pro", unit_amount=2900)

    address = f"127.0.0.1:{free_port()}"
    url = f"http://{address}"
    log = folder / "gunicorn.log"
    gunicorn = ["gunicorn", "project.wsgi", "--bind", address, "--workers", "2"]
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", *gunicorn, "--timeout", "60", "--graceful-timeout", "5"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_serving(url, server, log)
        plan = {"key": "pro", "name": "Pro", "stripePriceId": "price_pro"}
        request = urllib.request.Request(
            url + "/v1/plans",
            data=json.dumps(plan).encode(),
            headers={
                "Authorization": f"Bearer {keys['OPERATOR_KEY']}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
        yield Demo(url=url, keys=keys, stripe=stripe, log=log)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


@pytest.fixture(scope="module")
def chromium() -> Any:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    # Module scope: Playwright's event loop is gone before the next module's database tests.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def stripe_pages(page: Any) -> Any:
    """Stripe's hosted pages (Checkout, the portal), answered by the test. Through the
    DevTools protocol, since Playwright's routing does not see the request a redirect
    leads to, which is how the billing page sends the customer to Stripe."""
    session = page.context.new_cdp_session(page)

    def answer(event: dict[str, Any]) -> None:
        body = b"<!doctype html><title>Stripe</title><h1>Stripe (stand-in)</h1>"
        session.send(
            "Fetch.fulfillRequest",
            {
                "requestId": event["requestId"],
                "responseCode": 200,
                "responseHeaders": [{"name": "Content-Type", "value": "text/html"}],
                "body": base64.b64encode(body).decode(),
            },
        )

    session.on("Fetch.requestPaused", answer)
    patterns = [{"urlPattern": f"https://{host}/*"} for host in STRIPE_PAGES]
    session.send("Fetch.enable", {"patterns": patterns})
    return page


def profile(chromium: Any, demo: Demo) -> Any:
    """A fresh browser profile (no cookies) looking at the demo."""
    context = chromium.new_context(
        base_url=demo.url, viewport={"width": 1000, "height": 800}, device_scale_factor=1
    )
    context.set_default_timeout(WAIT_MS)
    context.set_default_navigation_timeout(WAIT_MS * 2)
    return context


@pytest.fixture
def browser(chromium, demo) -> Any:
    context = profile(chromium, demo)
    yield context
    context.close()


@pytest.fixture
def page(browser) -> Any:
    return stripe_pages(browser.new_page())


def screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("BILLING_SCREENSHOTS") or tmp_path)
    if not folder.is_absolute():
        folder = ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a page, not a blank
    return path


def log_in(page: Any, username: str, password: str, then: str) -> None:
    page.goto(f"/accounts/login/?next={then}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**{then}")


def meter(page: Any, primitive: str) -> Any:
    name = page.locator(".billing-meter__name", has_text=re.compile(f"^{re.escape(primitive)}$"))
    return page.locator("li.billing-meter", has=name)


def bar(page: Any, primitive: str) -> tuple[int, int]:
    """(value, max) of the primitive's <progress>, found by its accessible name."""
    progress = page.get_by_role("progressbar", name=primitive, exact=True)
    return int(progress.get_attribute("value")), int(progress.get_attribute("max"))


TENANT = ("tenant@example.com", "tenant")


def test_admin_edits_a_plans_quota_and_the_customer_sees_it(page, chromium, demo, tmp_path):
    from playwright.sync_api import expect

    page.goto("/admin/login/?next=/admin/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("admin")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="Plans", exact=True).first.click()
    page.wait_for_url("**/admin/billing_app/plan/")
    page.get_by_role("link", name="free", exact=True).click()
    page.wait_for_url("**/admin/billing_app/plan/*/change/")
    primitives = page.locator("input[name^='quotas-'][name$='-primitive']")
    names = [primitives.nth(i).get_attribute("name") for i in range(primitives.count())]
    (seo,) = [n for n in names if page.locator(f"input[name='{n}']").input_value() == "seo"]
    limit = page.locator(f"input[name='{seo.replace('-primitive', '-limit')}']")
    assert limit.input_value() == "10"
    limit.fill("4")
    # The form's whole width in the picture: the admin's side navigation folded away.
    page.set_viewport_size({"width": 1280, "height": 800})
    if page.locator("#toggle-nav-sidebar").is_visible():
        page.locator("#toggle-nav-sidebar").click()
    screenshot(page, "admin-plan-quotas.png", tmp_path)
    page.locator("input[name='_save']").click()
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")

    # The customer's page, in another browser and whichever worker answers, has it at once.
    other = profile(chromium, demo)
    customer = other.new_page()
    log_in(customer, *TENANT, then="/billing/account/")
    assert bar(customer, "seo")[1] == 4
    other.close()


def test_billing_page_shows_plan_usage_plans_and_forms(page, demo):
    page.goto("/")
    page.get_by_role("link", name="Billing page").click()
    page.wait_for_url("**/accounts/login/?next=/billing/account/")
    log_in(page, *TENANT, then="/billing/account/")

    assert page.get_by_role("heading", name="Billing", level=1).is_visible()
    plan = page.locator("section", has=page.get_by_role("heading", name="Your plan"))
    assert "Free" in plan.inner_text() and "Active" in plan.inner_text()
    for primitive in ("seo", "aeo"):
        value, top = bar(page, primitive)
        assert 0 <= value <= top
        assert "Resets" in meter(page, primitive).inner_text()
    assert page.get_by_role("button", name="Subscribe to Pro").is_visible()
    assert page.get_by_label("Now: your plan ends at once").is_visible()
    assert page.get_by_role("button", name="Cancel subscription").is_visible()


def test_using_up_a_quota_fills_the_bar_and_the_view_refuses(page, demo, tmp_path):
    log_in(page, *TENANT, then="/billing/account/")
    used, limit = bar(page, "seo")
    assert 0 < limit <= 50

    # The demo's metered view, called as the signed-in tenant (the browser's session).
    statuses = [page.request.post("/demo/seo/").status for _ in range(limit - used)]
    refused = page.request.post("/demo/seo/")

    assert statuses == [200] * (limit - used)
    assert refused.status == 429
    body = refused.json()
    assert body["error"] == "rate_limited"
    assert body["usage"] == {"current": limit, "limit": limit}
    assert int(refused.headers["retry-after"]) > 0

    page.reload()
    assert bar(page, "seo") == (limit, limit)
    seo = meter(page, "seo")
    assert f"{limit} of {limit} used, 0 left" in seo.inner_text()
    assert "Quota used up: calls are refused until it resets." in seo.inner_text()
    screenshot(page, "billing-page.png", tmp_path)


def test_checkout_by_keyboard_lands_on_stripes_page(page, demo):
    log_in(page, *TENANT, then="/billing/account/")

    # Stripe failing first (past stripe-python's own retries): the page says so.
    demo.stripe.fail("POST", "/v1/checkout/sessions", "html", times=10)
    with page.expect_navigation(url=f"{demo.url}/billing/account/"):
        page.get_by_role("button", name="Subscribe to Pro").click()
    alert = page.get_by_role("alert")
    assert alert.inner_text() == "Stripe could not do this now; nothing was changed."
    demo.stripe.failures.clear()

    # Then by keyboard alone: Tab to the button, Enter.
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "Subscribe to Pro":
            break
    else:
        raise AssertionError("Tab never reached the Subscribe to Pro button")
    with page.expect_navigation(url=re.compile(r"^https://checkout\.stripe\.com/")):
        page.keyboard.press("Enter")

    sessions = [o for o in demo.stripe.objects.values() if o["object"] == "checkout.session"]
    (session,) = sessions
    assert page.url == session["url"]
    assert session["success_url"] == f"{demo.url}/billing/account/?checkout=success"
    assert session["cancel_url"] == f"{demo.url}/billing/account/?checkout=canceled"
    customer = demo.stripe.objects[session["customer"]]
    assert customer["metadata"]["billing_customer"] == demo.keys["TENANT_ID"]

    # Stripe sends the customer back.
    page.goto(session["success_url"])
    assert "shows here as soon as Stripe confirms" in page.get_by_role("status").inner_text()


def test_chromium_is_debians(chromium):
    """Not a browser build Playwright downloaded: the one the test command installs."""
    assert shutil.which("chromium") == CHROMIUM
    assert chromium.version.split(".")[0].isdigit()
