"""Include with ``path("", include("billing_app.urls"))``: serves ``/v1/...`` (operator),
``/billing/...`` (tenant self-service and the Stripe webhook) and the customer's billing
page at ``/billing/account/``."""

from django.urls import include, path

from . import pages

app_name = "billing"

account = [
    path("", pages.account, name="account"),
    path("checkout/", pages.checkout, name="account-checkout"),
    path("portal/", pages.portal, name="account-portal"),
    path("cancel/", pages.cancel, name="account-cancel"),
    path("reactivate/", pages.reactivate, name="account-reactivate"),
]

urlpatterns = [
    path("v1/", include("billing_app.api.urls")),
    path("billing/account/", include(account)),
    path("billing/", include("billing_app.api.self_service_urls")),
]
