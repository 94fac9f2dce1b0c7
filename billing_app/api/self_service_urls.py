from django.urls import path

from . import credits
from . import self_service as views
from .webhook import webhook

endpoints = [
    path("subscription", views.SubscriptionView.as_view(), name="self-subscription"),
    path("usage", views.UsageView.as_view(), name="self-usage"),
    path("upcoming", views.UpcomingView.as_view(), name="self-upcoming"),
    path("invoices", views.InvoicesView.as_view(), name="self-invoices"),
    path("checkout", views.CheckoutView.as_view(), name="self-checkout"),
    path("portal", views.PortalView.as_view(), name="self-portal"),
    path("cancel", views.CancelView.as_view(), name="self-cancel"),
    path("reactivate", views.ReactivateView.as_view(), name="self-reactivate"),
    path("credits", credits.SelfCreditsView.as_view(), name="self-credits"),
    path("credits/checkout", credits.SelfCreditCheckoutView.as_view(), name="self-credit-checkout"),
]

urlpatterns = [
    *endpoints,
    path("webhook", webhook, name="stripe-webhook"),
]
