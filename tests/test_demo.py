"""The demo project: its home page, its login, and the seed that lets a person in."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from billing_app.conf import customer_is_user

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not customer_is_user(), reason="the demo project bills its users"),
]


ROOT = Path(__file__).resolve().parent.parent
DEMO_TEMPLATES = ROOT / "templates"


@pytest.fixture
def demo(settings):
    """The demo's URLs, templates and login redirect, as project/settings.py has them."""
    settings.ROOT_URLCONF = "project.urls"
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [DEMO_TEMPLATES]}]
    settings.LOGIN_REDIRECT_URL = "/billing/account/"
    return Client()


def seed(*args: str) -> str:
    out = StringIO()
    call_command("demo_seed", *args, stdout=out)
    return out.getvalue()


def test_home_links_the_billing_page_the_admin_and_the_api_docs(demo):
    response = demo.get("/")

    assert response.status_code == 200
    links = re.findall(r'href="([^"]+)"', response.content.decode())
    assert {"/billing/account/", "/admin/", "/v1/docs/", "/accounts/login/"} <= set(links)


def test_seed_prints_a_login_that_opens_the_billing_page(demo):
    printed = seed()

    user, password = re.search(
        r"/billing/account/\s+\(user (\S+), password (\S+)\)", printed
    ).groups()
    response = demo.post("/accounts/login/", {"username": user, "password": password})
    assert response.status_code == 302
    assert response["Location"] == "/billing/account/"

    page = demo.get("/billing/account/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Free" in html and 'progress max="10"' in html
    assert "billing_app demo" in html  # the demo's layout, from its templates/
    assert f"Signed in as {user}" in html


def test_seed_again_keeps_the_login(demo):
    seed()
    printed = seed()

    user, password = re.search(r"\(user (\S+), password (\S+)\)", printed).groups()
    assert demo.login(username=user, password=password)
    assert get_user_model().objects.filter(username=user).count() == 1


@pytest.mark.parametrize(
    ("args", "base"),
    [
        ((), "http://127.0.0.1:8000"),
        (("--address", "0.0.0.0:9000"), "http://0.0.0.0:9000"),
        (("--address", "8001"), "http://127.0.0.1:8001"),
        (("--address", "[::1]:8002"), "http://[::1]:8002"),
    ],
)
def test_seed_prints_the_address_the_demo_is_served_on(demo, args, base):
    printed = seed(*args)

    urls = re.findall(r"http://\S+", printed)
    assert urls == [f"{base}/billing/account/", f"{base}/admin/"]


@pytest.mark.parametrize(
    ("args", "address", "runserver"),
    [
        ((), "127.0.0.1:8000", "127.0.0.1:8000"),
        (("0.0.0.0:9000",), "0.0.0.0:9000", "0.0.0.0:9000"),
        (("8001", "--noreload"), "8001", "8001 --noreload"),
        (("--noreload",), "127.0.0.1:8000", "127.0.0.1:8000 --noreload"),
    ],
)
def test_the_demo_script_seeds_with_the_address_it_serves_on(tmp_path, args, address, runserver):
    """scripts/demo as it is, with its bootstrap and the venv's python standing in: the
    address the seed prints is the one runserver is given."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    script = tmp_path / "scripts" / "demo"
    script.write_text((ROOT / "scripts" / "demo").read_text())
    (tmp_path / "scripts" / "bootstrap").write_text("#!/bin/sh\n")
    (tmp_path / ".venv" / "bin" / "python").write_text('#!/bin/sh\necho "$@"\n')
    for path in (script, tmp_path / "scripts" / "bootstrap", tmp_path / ".venv/bin/python"):
        path.chmod(0o755)

    done = subprocess.run([script, *args], capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    calls = done.stdout.splitlines()[1:]  # after "Migrating ..."
    assert calls == [
        "manage.py migrate --no-input -v 0",
        f"manage.py demo_seed --address {address}",
        f"manage.py runserver {runserver}",
    ]


def test_billing_page_asks_a_signed_out_visitor_to_log_in(demo):
    seed()

    response = demo.get("/billing/account/", follow=True)

    assert response.redirect_chain == [("/accounts/login/?next=/billing/account/", 302)]
    html = response.content.decode()
    assert '<label for="id_username">' in html and '<label for="id_password">' in html
    assert 'name="next" value="/billing/account/"' in html


# A request the demo answers 500 to: its database has no tables, so looking up the key fails.
CRASH = """
import django
django.setup()
from django.test import Client
response = Client(raise_request_exception=False).get(
    "/v1/plans", HTTP_AUTHORIZATION="Bearer sk_abc.def"
)
print(response.status_code)
"""


def test_a_500_is_logged_to_stderr_with_the_demos_settings(tmp_path):
    """With DEBUG off, Django's own logging sends errors only to mail_admins: the demo's
    settings log them to stderr, so a 500 under gunicorn leaves a trace."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "testserver",
    }
    done = subprocess.run(
        [sys.executable, "-c", CRASH],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.stdout.strip() == "500", done.stderr
    assert "Internal Server Error: /v1/plans" in done.stderr
    assert "Traceback" in done.stderr and "no such table" in done.stderr
