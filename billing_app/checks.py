"""System checks: each way to misconfigure the app has an id and a hint."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.checks import Error, Tags, register

from .conf import billing_settings, customer_model_label
from .periods import PERIODS


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors = []
    if billing_settings.QUOTA_EXCEEDED_STATUS not in (402, 429):
        errors.append(
            Error(
                "BILLING_QUOTA_EXCEEDED_STATUS must be 429 or 402.",
                hint="429 (Too Many Requests) is the default; 402 (Payment Required) suits "
                "paywalls.",
                id="billing_app.E001",
            )
        )
    if billing_settings.DEFAULT_PERIOD not in PERIODS:
        errors.append(
            Error(
                f"BILLING_DEFAULT_PERIOD must be one of {', '.join(PERIODS)}.",
                hint="It is the quota window of tenants without a subscription.",
                id="billing_app.E002",
            )
        )
    try:
        ZoneInfo(billing_settings.TIME_ZONE)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        errors.append(
            Error(
                f"BILLING_TIME_ZONE {billing_settings.TIME_ZONE!r} is not a known time zone.",
                hint="Use an IANA name such as 'UTC' or 'Europe/Paris'.",
                id="billing_app.E003",
            )
        )
    for name in ("PAST_DUE_GRACE", "LATE_USAGE_WINDOW"):
        if not isinstance(getattr(billing_settings, name), timedelta):
            errors.append(
                Error(
                    f"BILLING_{name} must be a datetime.timedelta.",
                    hint="For example timedelta(days=3).",
                    id="billing_app.E004",
                )
            )
    if billing_settings.CHANGE_PLAN_USAGE not in ("carry", "reset"):
        errors.append(
            Error(
                "BILLING_CHANGE_PLAN_USAGE must be 'carry' or 'reset'.",
                hint="It says whether a plan change keeps the current window's usage.",
                id="billing_app.E006",
            )
        )
    errors.extend(_metered_paths_errors())
    errors.extend(_customer_model_errors())
    for app in ("rest_framework", "rest_framework_api_key", "djstripe"):
        if app not in settings.INSTALLED_APPS:
            errors.append(
                Error(
                    f"billing_app needs {app!r} in INSTALLED_APPS.",
                    hint="Add it before 'billing_app'.",
                    id="billing_app.E005",
                )
            )
    return errors


def _metered_paths_errors() -> list[Error]:
    from django.utils.module_loading import import_string

    from .decorators import MIDDLEWARE
    from .validation import check_primitive

    rule = billing_settings.METERED_PATHS
    if not rule:
        return []
    problem = None
    if isinstance(rule, str):
        try:
            if not callable(import_string(rule)):
                problem = f"{rule!r} is not a callable."
        except ImportError as error:
            problem = f"{rule!r} cannot be imported: {error}."
    elif isinstance(rule, dict):
        for prefix, primitive in rule.items():
            try:
                if not (isinstance(prefix, str) and prefix.startswith("/")):
                    raise ValueError
                if primitive is not None:
                    check_primitive("BILLING_METERED_PATHS", primitive)
            except Exception:
                problem = f"{prefix!r}: {primitive!r} is not a path prefix and a primitive."
                break
    else:
        problem = "it is neither a dict nor a dotted path."
    if problem:
        return [
            Error(
                f"BILLING_METERED_PATHS: {problem}",
                hint='For example {"/api/": "api.calls"} (a primitive of None leaves a '
                "prefix out), or the dotted path of a callable(request) -> primitive or None.",
                id="billing_app.E009",
            )
        ]
    if MIDDLEWARE not in settings.MIDDLEWARE:
        return [
            Error(
                f"BILLING_METERED_PATHS is set but {MIDDLEWARE} is not in MIDDLEWARE: "
                "no request would be counted.",
                hint="Add it after AuthenticationMiddleware.",
                id="billing_app.E010",
            )
        ]
    return []


def _customer_model_errors() -> list[Error]:
    from django.apps import apps

    label = customer_model_label()
    try:
        apps.get_model(label)
    except (LookupError, ValueError):
        return [
            Error(
                f"BILLING_CUSTOMER_MODEL refers to {label!r}, which is not an installed model.",
                hint="Use 'app_label.ModelName', set before the first migrate.",
                id="billing_app.E007",
            )
        ]
    subscriber = getattr(settings, "DJSTRIPE_SUBSCRIBER_MODEL", settings.AUTH_USER_MODEL)
    if subscriber.lower() != label.lower():
        return [
            Error(
                f"DJSTRIPE_SUBSCRIBER_MODEL ({subscriber}) is not BILLING_CUSTOMER_MODEL "
                f"({label}).",
                hint="The billed customer is dj-stripe's subscriber: set both to the same model.",
                id="billing_app.E008",
            )
        ]
    return []
