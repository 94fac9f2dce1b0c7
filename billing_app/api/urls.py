from django.urls import include, path

from . import credits, self_service_urls, views
from .docs import SchemaView, api_docs

endpoints = [
    path("plans", views.PlanListView.as_view(), name="plans"),
    path("products", views.ProductListView.as_view(), name="products"),
    path("account-kits", views.AccountKitListView.as_view(), name="account-kits"),
    path("usage/events", views.UsageEventsView.as_view(), name="usage-events"),
    path("licenses/check", views.LicenseCheckView.as_view(), name="licenses-check"),
    path("credit-packs", credits.CreditPackListView.as_view(), name="credit-packs"),
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
        "users/<str:user_id>/billing/subscription/trial",
        views.TrialView.as_view(),
        name="user-subscription-trial",
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
    path(
        "users/<str:user_id>/billing/upcoming", views.UpcomingView.as_view(), name="user-upcoming"
    ),
    path("users/<str:user_id>/billing/check", views.CheckView.as_view(), name="user-check"),
    path("users/<str:user_id>/billing/credits", credits.CreditsView.as_view(), name="user-credits"),
    path(
        "users/<str:user_id>/billing/credits/grants",
        credits.CreditGrantView.as_view(),
        name="user-credit-grants",
    ),
    path(
        "users/<str:user_id>/billing/credits/ledger",
        credits.CreditLedgerView.as_view(),
        name="user-credit-ledger",
    ),
    path(
        "users/<str:user_id>/billing/gauges/<str:primitive>",
        views.GaugeView.as_view(),
        name="user-gauge",
    ),
]

# The schema covers the app's endpoints only, not the host project's other views.
schema = SchemaView.as_view(
    patterns=[
        path("v1/", include(endpoints)),
        path("billing/", include(self_service_urls.endpoints)),
    ]
)

urlpatterns = [
    *endpoints,
    path("schema/", schema, name="schema"),
    path("docs/", api_docs, name="docs"),
]
