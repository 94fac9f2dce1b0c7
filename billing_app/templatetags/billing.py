"""``{% load billing %}``: gate parts of a page on the customer's plan, and show usage.

    {% feature "sso" %}<a href="/sso/">Single sign-on</a>{% else %}Upgrade for SSO{% endfeature %}
    {% usage "seo" as u %}{{ u.used }} of {{ u.limit }}, {{ u.remaining }} left,
    resets {{ u.resets_at }}

The customer is the request's (``django.template.context_processors.request`` puts it in
the context), or one named with ``for``: ``{% feature "sso" for org %}``,
``{% usage "seo" for org as u %}``. A request without a customer has no feature and no
usage (``u`` is None). Both tags only read, and a page reads its customer's entitlement
and usage once however many tags it has.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.template.base import FilterExpression, NodeList, Parser, Token

from ..exceptions import BillingImproperlyConfigured
from ..features import feature_is_active, usage_of

register = template.Library()

NO_REQUEST = (
    "{%% %s %%} needs the request in the template context: add "
    "'django.template.context_processors.request' to the template engine's "
    "context_processors, or name the customer (for customer)."
)


def _who(context: template.Context, customer: FilterExpression | None, tag: str) -> Any:
    if customer is not None:
        return customer.resolve(context)
    request = context.get("request")
    if request is None:
        raise BillingImproperlyConfigured(NO_REQUEST % tag)
    return request


class FeatureNode(template.Node):
    def __init__(
        self,
        feature: FilterExpression,
        customer: FilterExpression | None,
        granted: NodeList,
        refused: NodeList,
    ) -> None:
        self.feature, self.customer = feature, customer
        self.granted, self.refused = granted, refused

    def render(self, context: template.Context) -> str:
        who = _who(context, self.customer, "feature")
        if who is not None and feature_is_active(who, self.feature.resolve(context)):
            return self.granted.render(context)
        return self.refused.render(context)


class UsageNode(template.Node):
    def __init__(
        self, primitive: FilterExpression, customer: FilterExpression | None, name: str
    ) -> None:
        self.primitive, self.customer, self.name = primitive, customer, name

    def render(self, context: template.Context) -> str:
        who = _who(context, self.customer, "usage")
        usage = None if who is None else usage_of(who, self.primitive.resolve(context))
        context[self.name] = usage
        return ""


def _parse(parser: Parser, token: Token, *, alias: bool) -> tuple[Any, ...]:
    """``tag "name" [for customer] [as var]`` -> (name, customer or None, var or None)."""
    tag, *bits = token.split_contents()
    usage = f'{{% {tag} "name" [for customer]{" as var" if alias else ""} %}}'
    var = None
    if alias:
        if len(bits) < 3 or bits[-2] != "as":
            raise template.TemplateSyntaxError(f"Use {usage}.")
        var, bits = bits[-1], bits[:-2]
    if len(bits) not in (1, 3) or (len(bits) == 3 and bits[1] != "for"):
        raise template.TemplateSyntaxError(f"Use {usage}.")
    customer = parser.compile_filter(bits[2]) if len(bits) == 3 else None
    return parser.compile_filter(bits[0]), customer, var


@register.tag
def feature(parser: Parser, token: Token) -> FeatureNode:
    """``{% feature "sso" [for customer] %}…{% else %}…{% endfeature %}``"""
    name, customer, _ = _parse(parser, token, alias=False)
    granted = parser.parse(("else", "endfeature"))
    refused = NodeList()
    if parser.next_token().contents == "else":
        refused = parser.parse(("endfeature",))
        parser.delete_first_token()
    return FeatureNode(name, customer, granted, refused)


@register.tag
def usage(parser: Parser, token: Token) -> UsageNode:
    """``{% usage "seo" [for customer] as u %}``: ``u.used``, ``u.limit``,
    ``u.remaining``, ``u.resets_at`` (None when unlimited: limit and remaining)."""
    name, customer, var = _parse(parser, token, alias=True)
    return UsageNode(name, customer, var)
