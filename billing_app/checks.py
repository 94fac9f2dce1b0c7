"""System checks: each way to misconfigure the app has an id and a hint."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.urls import URLPattern, URLResolver, get_resolver

from .conf import billing_settings, customer_model_label
from .decorators import MIDDLEWARE
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
    for app in ("rest_framework", "rest_framework_api_key", "drf_spectacular_sidecar", "djstripe"):
        if app not in settings.INSTALLED_APPS:
            errors.append(
                Error(
                    f"billing_app needs {app!r} in INSTALLED_APPS.",
                    hint="Add it before 'billing_app'.",
                    id="billing_app.E005",
                )
            )
    if getattr(settings, "DJSTRIPE_FOREIGN_KEY_TO_FIELD", None) != "id":
        errors.append(
            Error(
                'billing_app needs DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id".',
                hint="Set it in settings before the first migrate: billing_app finds Stripe "
                "objects by their Stripe ids.",
                id="billing_app.E009",
            )
        )
    return errors


@register(Tags.urls)
def check_metered_views(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """``@metered`` views and ``BILLING_METERED_PATHS`` are enforced by the middleware:
    without it the views would answer 500 at their first request and the paths would count
    nothing, so say so at startup instead."""
    if MIDDLEWARE in settings.MIDDLEWARE:
        return []
    hint = f'Add "{MIDDLEWARE}" to MIDDLEWARE, after AuthenticationMiddleware.'
    if billing_settings.METERED_PATHS:
        message = f"BILLING_METERED_PATHS is set but {MIDDLEWARE} is not in MIDDLEWARE: "
        return [Error(message + "no request would be counted.", hint=hint, id="billing_app.E010")]
    try:
        views = list(_metered_views(get_resolver().url_patterns))
    except Exception:  # Django's own URL checks report a broken URLconf.
        return []
    if not views:
        return []
    return [
        Error(
            f"{MIDDLEWARE} is not in MIDDLEWARE, but {len(views)} view(s) are @metered: "
            f"{', '.join(sorted(views)[:3])}{', ...' if len(views) > 3 else '.'}",
            hint=hint,
            id="billing_app.E010",
        )
    ]


def _metered_views(patterns: list[Any], prefix: str = "") -> Any:
    """The routes (``"demo/seo/"``) of the ``@metered`` views among ``patterns``."""
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _metered_views(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern) and hasattr(pattern.callback, "billing_metered"):
            yield route


def _metered_paths_errors() -> list[Error]:
    from django.utils.module_loading import import_string

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
                problem = (
                    f"{prefix!r}: {primitive!r} is not a path prefix (starting with '/') and "
                    "a primitive."
                )
                break
    else:
        problem = "it is neither a dict nor a dotted path."
    if problem is None:
        return []
    return [
        Error(
            f"BILLING_METERED_PATHS: {problem}",
            hint='For example {"/api/": "api.calls"} (a primitive of None leaves a '
            "prefix out), or the dotted path of a callable(request) -> primitive or None.",
            id="billing_app.E012",
        )
    ]


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


REQUEST_PROCESSOR = "django.template.context_processors.request"


@register(Tags.templates)
def check_templates(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """The {% feature %} and {% usage %} tags find the customer through the request."""
    engines = [
        engine
        for engine in settings.TEMPLATES
        if engine.get("BACKEND") == "django.template.backends.django.DjangoTemplates"
    ]
    if not engines or any(REQUEST_PROCESSOR in _processors(engine) for engine in engines):
        return []
    return [
        Warning(
            f"No DjangoTemplates engine has {REQUEST_PROCESSOR!r} in its context_processors.",
            hint="billing_app's {% feature %} and {% usage %} tags read the customer from "
            "the request: add it (the admin needs it too), or name the customer with "
            "'for customer' in every tag.",
            id="billing_app.W001",
        )
    ]


def _processors(engine: dict[str, Any]) -> list[str]:
    options: dict[str, Any] = engine.get("OPTIONS") or {}
    return list(options.get("context_processors", []))


@register(Tags.database)
def check_plan_currencies(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[Error]:
    """Each plan's currency is its Stripe price's, as dj-stripe has it synced (no network).
    A database check: ``migrate`` and ``check --database default`` run it."""
    from django.db import DatabaseError
    from djstripe.models import Price as StripePrice

    from .models import Plan

    errors = []
    for database in databases or []:
        try:
            plans = list(
                Plan.objects.using(database)
                .exclude(stripe_price_id="")
                .values_list("key", "currency", "stripe_price_id")
            )
            synced = dict(
                StripePrice.objects.using(database)
                .filter(id__in=[price for _, _, price in plans])
                .values_list("id", "currency")
            )
        except DatabaseError:
            continue  # not migrated yet: nothing to compare
        for key, currency, price in plans:
            theirs = (synced.get(price) or "").lower()
            if theirs and theirs != currency:
                errors.append(
                    Error(
                        f"Plan {key!r} is in {currency}, its Stripe price {price} in {theirs}.",
                        hint="A plan's currency is its Stripe price's: set the plan's currency "
                        "(POST /v1/plans, or the admin) or give it a price in its currency.",
                        id="billing_app.E011",
                    )
                )
    return errors
