"""The API docs page and the schema need no setting from the host: no
``SPECTACULAR_SETTINGS``, no ``DEFAULT_SCHEMA_CLASS``, not even ``drf_spectacular`` in
``INSTALLED_APPS``; the page's assets are the host's own static files (offline)."""

import re

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.test import override_settings

from billing_app.api.docs import TITLE

# A host as the README sets it up: no drf_spectacular app, no spectacular settings.
HOST_APPS = [app for app in settings.INSTALLED_APPS if app != "drf_spectacular"]


def assets_of(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


@pytest.mark.django_db
@override_settings(INSTALLED_APPS=HOST_APPS, REST_FRAMEWORK={})
def test_docs_page_loads_its_assets_from_the_hosts_static_files(anonymous):
    del settings.SPECTACULAR_SETTINGS
    response = anonymous.get("/v1/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assets = assets_of(html)
    assert len(assets) == 5  # icon, stylesheet, two Swagger UI scripts, ours
    for url in assets:
        assert url.startswith(settings.STATIC_URL) or url.startswith("/" + settings.STATIC_URL)
        path = url.split(settings.STATIC_URL, 1)[1]
        assert finders.find(path), f"{path} is not among the static files"
    assert "//" not in "".join(assets), "nothing from a CDN"
    assert 'data-schema-url="/v1/schema/"' in html
    assert "<script>" not in html, "no inline script: a strict CSP allows the page"


@pytest.mark.django_db
@override_settings(INSTALLED_APPS=HOST_APPS, REST_FRAMEWORK={})
def test_schema_is_served_without_spectacular_settings(anonymous):
    del settings.SPECTACULAR_SETTINGS
    response = anonymous.get("/v1/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == TITLE
    assert "/v1/plans" in schema["paths"]
    assert "/billing/subscription" in schema["paths"]


@pytest.mark.django_db
def test_docs_page_is_read_only(anonymous):
    assert anonymous.post("/v1/docs/").status_code == 405


@pytest.mark.django_db
@override_settings(ROOT_URLCONF="billing_app.urls", REST_FRAMEWORK={})
def test_spectacular_deploy_check_finds_nothing_in_the_apps_views():
    """A host that installs drf_spectacular (without setting DEFAULT_SCHEMA_CLASS) runs its
    deploy check over every URL; the app's views give it nothing to report."""
    from drf_spectacular.checks import schema_check

    assert schema_check(None) == []
