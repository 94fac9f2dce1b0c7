"""project.settings plus the benchmark views; DEBUG off so queries are not kept in memory."""

from project.settings import *  # noqa: F403

DEBUG = False
ROOT_URLCONF = "benchmarks.urls"
