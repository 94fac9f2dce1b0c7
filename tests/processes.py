"""Worker processes for tests that need several processes, as two gunicorn workers are:
each has its own database connection, its own caches and its own entitlement LRU. They
are started with the ``spawn`` method, so nothing is shared with the test process but
the database."""

from __future__ import annotations

import os
import time
from typing import Any


def setup(database_name: str) -> None:
    """Django in a fresh process, on the test database the parent created."""
    import django

    django.setup()
    from django.db import connections

    connections["default"].settings_dict["NAME"] = database_name


def feature_calls(database_name: str, token: str, stop: Any, stop_at: float, results: Any) -> None:
    """GET the test view gated on ``sso`` until ``stop`` is set (``stop_at`` at the
    latest); put ``("ready", pid)`` on ``results`` once a call was granted (the worker has
    cached the entitlement), then one ``(started, finished, status)`` per call."""
    setup(database_name)
    from django.test import Client

    client = Client(headers={"Authorization": f"Bearer {token}"})
    calls: list[tuple[float, float, int]] = []
    while not stop.is_set() and time.time() < stop_at and len(calls) < 20_000:
        started = time.time()
        status = client.get("/test/sso/").status_code
        if status == 200 and not any(call[2] == 200 for call in calls):
            results.put(("ready", os.getpid()))
        calls.append((started, time.time(), status))
    results.put((os.getpid(), calls))


def metered_calls(database_name: str, token: str, stop: Any, stop_at: float, results: Any) -> None:
    """Call the demo's metered view until ``stop`` is set (or ``stop_at``, wall clock, at
    the latest), and put one ``(started, finished, status, limit)`` per call on
    ``results``. ``limit`` is the quota the answer says it was decided on
    (RateLimit-Policy), or None."""
    setup(database_name)
    from django.test import Client

    client = Client()
    calls = []
    while not stop.is_set() and time.time() < stop_at and len(calls) < 50_000:
        started = time.time()
        response = client.post("/demo/seo/", HTTP_AUTHORIZATION=f"Bearer {token}")
        finished = time.time()
        policy = response.headers.get("RateLimit-Policy", "")
        limit = int(policy.split(";q=")[1].split(";")[0]) if ";q=" in policy else None
        calls.append((started, finished, response.status_code, limit))
    results.put((os.getpid(), calls))


def rate_calls(database_name: str, token: str, go: Any, seconds: float, results: Any) -> None:
    """Once set up (and the entitlement read once, through ``/billing/usage``), put
    ``("ready", pid)`` on ``results``; when ``go`` is set, call the demo's metered view for
    ``seconds``, then put ``(pid, calls)``: one ``(started, finished, status, error)`` each."""
    setup(database_name)
    from django.test import Client

    client = Client(headers={"Authorization": f"Bearer {token}"})
    assert client.get("/billing/usage").status_code == 200
    results.put(("ready", os.getpid()))
    go.wait(timeout=120)
    stop_at = time.time() + seconds
    calls = []
    while time.time() < stop_at and len(calls) < 50_000:
        started = time.time()
        response = client.post("/demo/seo/")
        error = response.json().get("error") if response.status_code != 200 else None
        calls.append((started, time.time(), response.status_code, error))
    results.put((os.getpid(), calls))
