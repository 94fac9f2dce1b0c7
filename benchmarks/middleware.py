"""Counts the SQL statements of each request and answers the count in ``X-Bench-Queries``.

Installed by benchmarks/settings.py only when ``BENCH_COUNT_QUERIES`` is set (the rollup
benchmark), first in the chain so authentication's queries count too.
"""

from collections.abc import Callable
from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponse


class QueryCountMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        count = 0

        def counting(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            nonlocal count
            count += 1
            return execute(sql, params, many, context)

        with connection.execute_wrapper(counting):
            response = self.get_response(request)
        response["X-Bench-Queries"] = str(count)
        return response
