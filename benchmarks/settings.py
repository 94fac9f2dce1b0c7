"""project.settings plus the benchmark views; DEBUG off so queries are not kept in memory."""

import os

from project.settings import *  # noqa: F403
from project.settings import MIDDLEWARE

DEBUG = False
ROOT_URLCONF = "benchmarks.urls"

# Django's default cache is a per-process LocMemCache of 300 entries: with benchmark 4's
# 1,000 tenants every entitlement would be culled before its next use. Still per process
# (each gunicorn worker warms its own), as in benchmark 1, but large enough to hold them.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "OPTIONS": {"MAX_ENTRIES": 100_000},
    }
}

if os.environ.get("BENCH_COUNT_QUERIES"):
    MIDDLEWARE = ["benchmarks.middleware.QueryCountMiddleware", *MIDDLEWARE]
