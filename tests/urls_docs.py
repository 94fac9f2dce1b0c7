"""The host project the how-tos' test examples assume: ``/reports/`` metered on seo."""

from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from billing_app.decorators import metered


@csrf_exempt
@metered("seo")
def reports(request):
    return JsonResponse({"rows": []})


urlpatterns = [path("reports/", reports), path("", include("tests.urls"))]
