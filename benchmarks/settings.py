"""project.settings plus the benchmark views, as production runs them: DEBUG off (queries
are not kept in memory) and persistent database connections."""

import os

from project.settings import *  # noqa: F403
from project.settings import DATABASES, MIDDLEWARE

DEBUG = False
ROOT_URLCONF = "benchmarks.urls"

# Persistent connections, as a production deployment sets them: each gunicorn worker keeps
# its connection for up to 10 minutes instead of opening one per request. No health check
# (CONN_HEALTH_CHECKS, Django's default): it would add a query per request.
DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("BENCH_CONN_MAX_AGE", "600"))

if os.environ.get("BENCH_REDIS_URL"):
    # side_by_side.py: one cache shared by every worker, as docs/architecture.md asks of a
    # production deployment (entitlements, kit rate limits and django-ratelimit all use it).
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["BENCH_REDIS_URL"],
        }
    }
else:
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
