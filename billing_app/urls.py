"""Include with ``path("", include("billing_app.urls"))``: serves ``/v1/...`` (operator)
and ``/billing/...`` (tenant self-service and the Stripe webhook)."""

from django.urls import include, path

app_name = "billing"

urlpatterns = [
    path("v1/", include("billing_app.api.urls")),
    path("billing/", include("billing_app.api.self_service_urls")),
]
