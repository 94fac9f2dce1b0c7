"""The app's settings: flat ``BILLING_*`` names, defaults here, read at access time.

``billing_settings.QUOTA_EXCEEDED_STATUS`` reads ``settings.BILLING_QUOTA_EXCEEDED_STATUS``
on every access, so ``override_settings`` works and nothing is written onto
``django.conf.settings``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Quota window of a tenant that has no subscription (usage is still recorded).
    "DEFAULT_PERIOD": "month",
    # Calendar windows (no Stripe period to anchor on) are cut in this time zone.
    "TIME_ZONE": "UTC",
    "QUOTA_EXCEEDED_STATUS": 429,
    "PAST_DUE_GRACE": timedelta(days=3),
    "LATE_USAGE_WINDOW": timedelta(days=35),
    # Plan key whose quotas apply to canceled, unpaid, incomplete(_expired) and paused
    # subscriptions; None refuses their calls with 402 subscription_inactive.
    "FALLBACK_PLAN": None,
    # Dotted path of a callable(request) -> user: whose usage a metered request is.
    "TENANT_RESOLVER": "billing_app.enforcement.default_tenant_resolver",
    # Cache alias for entitlements; several processes need a shared one (Redis, memcached).
    "CACHE": "default",
    "ENTITLEMENT_CACHE_TIMEOUT": 300,
    # On a plan change, usage of the current quota window "carry"s into the new plan's
    # quotas, or "reset"s to zero.
    "CHANGE_PLAN_USAGE": "carry",
    # Fractions of a quota that send usage_threshold_crossed (and the webhook) once a window.
    "USAGE_ALERT_THRESHOLDS": (0.8, 1.0),
    # The operator's endpoint for outbound webhooks (usage.threshold_crossed,
    # subscription.updated, cycle.closed), signed with WEBHOOK_SECRET; None sends none.
    "WEBHOOK_URL": None,
    "WEBHOOK_SECRET": "",
    # Metadata key, on a Stripe customer or subscription, that holds the tenant's user id.
    "STRIPE_METADATA_KEY": "billing_user",
    # Hosts that Checkout and the billing portal may send a tenant back to; None means
    # the project's ALLOWED_HOSTS.
    "ALLOWED_REDIRECT_HOSTS": None,
}


class BillingSettings:
    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown billing setting: BILLING_{name}")
        return getattr(settings, f"BILLING_{name}", DEFAULTS[name])


billing_settings = BillingSettings()
