"""The template tags for Jinja2: globals ``feature(name)`` and ``usage(primitive)``.

In the host's Jinja2 environment function::

    from billing_app.jinja import install

    def environment(**options):
        env = Environment(**options)
        ...
        return install(env)

or, with nothing else to add, ``"environment": "billing_app.jinja.environment"`` in the
Jinja2 backend's ``OPTIONS``. Then ``{% if feature("sso") %}`` and
``{% set u = usage("seo") %}{{ u.remaining }}``; both take ``customer=`` to name one.
Django's Jinja2 backend puts ``request`` in the context, which is where they find it.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, pass_context
from jinja2.runtime import Context

from .exceptions import BillingImproperlyConfigured
from .features import Usage, feature_is_active, usage_of


def _who(context: Context, customer: Any, name: str) -> Any:
    if customer is not None:
        return customer
    request = context.get("request")
    if request is None:
        raise BillingImproperlyConfigured(
            f"{name}() needs the request in the template context, or customer=."
        )
    return request


@pass_context
def feature(context: Context, name: str, customer: Any = None) -> bool:
    return feature_is_active(_who(context, customer, "feature"), name)


@pass_context
def usage(context: Context, primitive: str, customer: Any = None) -> Usage | None:
    return usage_of(_who(context, customer, "usage"), primitive)


def install(env: Environment) -> Environment:
    env.globals.update(feature=feature, usage=usage)
    return env


def environment(**options: Any) -> Environment:
    return install(Environment(**options))
