"""project.settings plus the benchmark views; DEBUG off so queries are not kept in memory."""

import os

from project.settings import *  # noqa: F403
from project.settings import MIDDLEWARE

DEBUG = False
ROOT_URLCONF = "benchmarks.urls"

if os.environ.get("BENCH_COUNT_QUERIES"):
    MIDDLEWARE = ["benchmarks.middleware.QueryCountMiddleware", *MIDDLEWARE]
