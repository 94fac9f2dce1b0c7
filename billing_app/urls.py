"""Include with ``path("", include("billing_app.urls"))``: serves ``/v1/...``."""

from django.urls import include, path

app_name = "billing"

urlpatterns = [
    path("v1/", include("billing_app.api.urls")),
]
