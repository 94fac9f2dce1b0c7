"""The three views of benchmarks/metered_overhead.py, beside the project's own URLs.

- /bench/unmetered/  the demo view without @metered, tenant-token authenticated
- /demo/seo/         the metered demo view (project.urls)
- /bench/floor/      authentication, then one raw SQL statement: conditional counter
                     upsert plus event insert (PostgreSQL only)
"""

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from rest_framework.exceptions import AuthenticationFailed

from billing_app.api.authentication import TenantTokenAuthentication
from billing_app.models import UsageCounter, UsageEvent
from project.demo.views import _answer
from project.urls import urlpatterns as project_urlpatterns

FLOOR_PRIMITIVE = "aeo"
FLOOR_LIMIT = 10**15
_authenticator = TenantTokenAuthentication()


def _tenant(request: HttpRequest):  # type: ignore[no-untyped-def]
    try:
        found = _authenticator.authenticate(request)  # type: ignore[arg-type]
    except AuthenticationFailed:
        found = None
    return found[0] if found else None


def _floor_sql() -> str:
    counter = UsageCounter._meta.db_table
    event = UsageEvent._meta.db_table
    return (
        "WITH c AS ("
        f" INSERT INTO {counter} (user_id, primitive, window_start, window_end, used)"
        " VALUES (%s, %s, date_trunc('month', now()),"
        "         date_trunc('month', now()) + interval '1 month', 1)"
        " ON CONFLICT (user_id, primitive, window_start) DO UPDATE"
        f" SET used = {counter}.used + 1 WHERE {counter}.used + 1 <= %s"
        " RETURNING used, window_start)"
        f" INSERT INTO {event} (user_id, primitive, quantity, occurred_at, recorded_at,"
        " window_start, idempotency_key, fingerprint)"
        " SELECT %s, %s, 1, now(), now(), c.window_start, '', '' FROM c RETURNING id"
    )


@csrf_exempt
@require_POST
def unmetered(request: HttpRequest) -> JsonResponse:
    if _tenant(request) is None:
        return JsonResponse({"detail": "unauthenticated"}, status=401)
    return _answer(request, "seo")


@csrf_exempt
@require_POST
def floor(request: HttpRequest) -> JsonResponse:
    user = _tenant(request)
    if user is None:
        return JsonResponse({"detail": "unauthenticated"}, status=401)
    with connection.cursor() as cursor:
        cursor.execute(
            _floor_sql(), [user.pk, FLOOR_PRIMITIVE, FLOOR_LIMIT, user.pk, FLOOR_PRIMITIVE]
        )
        if cursor.fetchone() is None:
            return JsonResponse({"detail": "quota exceeded"}, status=429)
    return _answer(request, FLOOR_PRIMITIVE)


urlpatterns = [
    path("bench/unmetered/", unmetered),
    path("bench/floor/", floor),
    *project_urlpatterns,
]
