"""The app's settings: flat ``BILLING_*`` names, defaults here, read at access time.

``billing_settings.QUOTA_EXCEEDED_STATUS`` reads ``settings.BILLING_QUOTA_EXCEEDED_STATUS``
on every access, so ``override_settings`` works and nothing is written onto
``django.conf.settings``.

``BILLING_CUSTOMER_MODEL`` is the exception: like ``AUTH_USER_MODEL`` it names the model
that migrations point at, so it is read once, when the models load, and must be set
before the first ``migrate``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Who is billed: "app_label.Model", any primary key type. Default: AUTH_USER_MODEL.
    "CUSTOMER_MODEL": None,
    # Dotted path of a callable(request) -> customer or None: whose usage a request is.
    "CUSTOMER_RESOLVER": "billing_app.customers.resolvers.default_customer_resolver",
    # Quota window of a customer that has no subscription (usage is still recorded).
    "DEFAULT_PERIOD": "month",
    # Calendar windows (no subscription to anchor on) are cut in this time zone.
    "TIME_ZONE": "UTC",
    "QUOTA_EXCEEDED_STATUS": 429,
    "PAST_DUE_GRACE": timedelta(days=3),
    "LATE_USAGE_WINDOW": timedelta(days=35),
    # Plan key whose quotas apply to canceled, unpaid, incomplete(_expired) and paused
    # subscriptions; None refuses their calls with 402 subscription_inactive.
    "FALLBACK_PLAN": None,
    # Entitlements are kept per process (an LRU of this many customers) and, when CACHE
    # names a Django cache alias, shared there too. Neither is needed for exactness: the
    # reservation checks the entitlement's version in the database.
    "ENTITLEMENT_CACHE_SIZE": 10_000,
    "CACHE": None,
    "ENTITLEMENT_CACHE_TIMEOUT": 300,
    # On a plan change, usage of the current quota window "carry"s into the new plan's
    # quotas, or "reset"s to zero.
    "CHANGE_PLAN_USAGE": "carry",
    # Fractions of a quota that send usage_threshold_crossed (and the webhook) once a window.
    "USAGE_ALERT_THRESHOLDS": (0.8, 1.0),
    # Fractions of the credits granted that send credit_balance_low (and the webhook) when
    # a draw takes the balance down to them.
    "CREDIT_ALERT_THRESHOLDS": (0.2, 0.0),
    # The operator's endpoint for outbound webhooks (usage.threshold_crossed,
    # subscription.updated, cycle.closed), signed with WEBHOOK_SECRET; None sends none.
    "WEBHOOK_URL": None,
    "WEBHOOK_SECRET": "",
    # Metadata key, on a Stripe customer or subscription, that holds the customer's id.
    "STRIPE_METADATA_KEY": "billing_customer",
    # Hosts that Checkout and the billing portal may send a customer back to; None means
    # the project's ALLOWED_HOSTS.
    "ALLOWED_REDIRECT_HOSTS": None,
    # Requests counted by QuotaMiddleware whatever their view: {"/api/": "api.calls"} (the
    # longest matching prefix wins; a primitive of None leaves its paths out), or the
    # dotted path of a callable(request) -> primitive or None. None counts none.
    "METERED_PATHS": None,
}


class BillingSettings:
    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown billing setting: BILLING_{name}")
        return getattr(settings, f"BILLING_{name}", DEFAULTS[name])


billing_settings = BillingSettings()


def customer_model_label() -> str:
    """``"app_label.Model"`` of the billed model: ``BILLING_CUSTOMER_MODEL`` or the user."""
    return getattr(settings, "BILLING_CUSTOMER_MODEL", None) or settings.AUTH_USER_MODEL


def customer_model() -> Any:
    from django.apps import apps

    return apps.get_model(customer_model_label(), require_ready=False)


def customer_is_user() -> bool:
    return customer_model_label().lower() == settings.AUTH_USER_MODEL.lower()


def customer_id_json(pk: Any) -> int | str:
    """A customer's key as the API answers it: an integer stays a JSON number, any other
    key (a UUID, a string) travels as a JSON string."""
    return pk if isinstance(pk, int) and not isinstance(pk, bool) else str(pk)


def stripe_api_key() -> str:
    """The Stripe secret key dj-stripe uses (test or live, by ``STRIPE_LIVE_MODE``)."""
    from djstripe.settings import djstripe_settings

    return djstripe_settings.get_default_api_key(livemode=djstripe_settings.STRIPE_LIVE_MODE)
