from importlib.metadata import PackageNotFoundError, version

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import self_service_urls, views

endpoints = [
    path("plans", views.PlanListView.as_view(), name="plans"),
    path("account-kits", views.AccountKitListView.as_view(), name="account-kits"),
    path("usage/events", views.UsageEventsView.as_view(), name="usage-events"),
    path("licenses/check", views.LicenseCheckView.as_view(), name="licenses-check"),
    path(
        "subscriptions/<str:subscription_id>/seats",
        views.SeatsView.as_view(),
        name="subscription-seats",
    ),
    path("users", views.CustomerCreateView.as_view(), name="users"),
    path("users/<str:user_id>", views.CustomerDetailView.as_view(), name="user"),
    path("users/<str:user_id>/tokens", views.TokenView.as_view(), name="user-tokens"),
    path(
        "users/<str:user_id>/billing/subscription",
        views.SubscriptionView.as_view(),
        name="user-subscription",
    ),
    path(
        "users/<str:user_id>/billing/subscription/change-plan",
        views.ChangePlanView.as_view(),
        name="user-subscription-change-plan",
    ),
    path(
        "users/<str:user_id>/billing/subscription/cancel",
        views.CancelView.as_view(),
        name="user-subscription-cancel",
    ),
    path(
        "users/<str:user_id>/billing/subscription/reactivate",
        views.ReactivateView.as_view(),
        name="user-subscription-reactivate",
    ),
    path("users/<str:user_id>/billing/usage", views.UsageView.as_view(), name="user-usage"),
    path(
        "users/<str:user_id>/billing/usage/records",
        views.UsageRecordListView.as_view(),
        name="user-usage-records",
    ),
    path(
        "users/<str:user_id>/billing/usage/records/current",
        views.UsageRecordCurrentView.as_view(),
        name="user-usage-record-current",
    ),
    path("users/<str:user_id>/billing/check", views.CheckView.as_view(), name="user-check"),
]


def _version() -> str:
    try:
        return version("billing_app")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return ""


# The schema covers the app's endpoints only, not the host project's other views. OpenAPI
# 3.1: JSON Schema proper, which can say that the keys of an object are primitive slugs.
schema = SpectacularAPIView.as_view(
    patterns=[
        path("v1/", include(endpoints)),
        path("billing/", include(self_service_urls.endpoints)),
    ],
    custom_settings={
        "OAS_VERSION": "3.1.0",
        "TITLE": "billing_app",
        "DESCRIPTION": "Operator API (`/v1/`) and customer self-service (`/billing/`).",
        "VERSION": _version(),
    },
)

urlpatterns = [
    *endpoints,
    path("schema/", schema, name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="billing:schema"), name="docs"),
]
