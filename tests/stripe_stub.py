"""A Stripe stand-in on loopback, so dj-stripe's sync and our Stripe calls run unchanged.

It answers as Stripe does and no kinder, so that a test cannot pass on an answer Stripe
would never give:

- Every object has exactly the keys of Stripe's published example of its type
  (``tests/stripe_fixtures.json``, see ``tests/stripe_shapes.py``), with the values a test
  or a request set: nothing invented. A ``billing.meter_event`` has no ``id``; an invoice's
  subscription is under ``parent.subscription_details``; a subscription's period is on its
  items. Fields Stripe includes only on request (a customer's ``sources``, a Checkout
  Session's ``line_items``) appear only with ``expand[]``; an ``expand[]`` of something that
  cannot be expanded is refused.
- Requests are checked against Stripe's parameters for each endpoint (stripe-python's
  generated parameter types): unknown parameters are ``parameter_unknown``, missing
  required ones ``parameter_missing``, badly typed ones ``parameter_invalid_integer`` and
  the like; an unknown id is a 404 ``resource_missing`` (``param: "id"``), an unknown id in
  a parameter a 400 ``resource_missing`` naming that parameter. Errors carry Stripe's error
  object (``type``, ``message``, and ``code``, ``doc_url``, ``param`` where they apply,
  ``request_log_url``).
- Lists paginate as Stripe's do: ``limit`` (default 10, 1 to 100), ``starting_after``,
  ``ending_before``, ``has_more``, newest first.
- ``Idempotency-Key``: the same key and parameters replay the first answer, with
  ``Idempotent-Replayed: true`` and ``Original-Request``; the same key with other parameters
  is a 400 ``idempotency_error``. A request refused for its parameters stores nothing, as
  at Stripe.

What it does not model it refuses with a 500 saying so, rather than answer something.
Every request is recorded (``requests``, ``calls``); ``before`` and ``after`` let a test
fail or watch a request, and ``fail`` makes one break as a network or a proxy breaks.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe

from .stripe_shapes import (
    StripeRefusal,
    check,
    field_annotation,
    fixture,
    is_expandable,
    is_list_field,
    missing,
    nested_class,
    params_type,
    resource_class,
)

WEBHOOK_SECRET = "whsec_test_suite"
DAY = 86400

# Object type -> id prefix.
PREFIXES = {
    "account": "acct",
    "billing_portal.session": "bps",
    "checkout.session": "cs_test",
    "customer": "cus",
    "event": "evt",
    "invoice": "in",
    "invoiceitem": "ii",
    "item": "li",
    "price": "price",
    "product": "prod",
    "product_feature": "prodft",
    "subscription": "sub",
    "subscription_item": "si",
}

# The endpoints served: method, path under /v1/, stripe-python's parameter type, handler.
ROUTES = [
    ("GET", r"account", "AccountRetrieveCurrentParams", "account"),
    ("POST", r"billing/meter_events", "billing.MeterEventCreateParams", "create_meter_event"),
    ("POST", r"billing_portal/sessions", "billing_portal.SessionCreateParams", "create_portal"),
    ("POST", r"checkout/sessions", "checkout.SessionCreateParams", "create_checkout"),
    ("GET", r"checkout/sessions", "checkout.SessionListParams", "list"),
    ("GET", r"checkout/sessions/(?P<id>[^/]+)", "checkout.SessionRetrieveParams", "retrieve"),
    ("POST", r"customers", "CustomerCreateParams", "create_customer"),
    ("GET", r"customers", "CustomerListParams", "list"),
    ("GET", r"customers/(?P<id>[^/]+)", "CustomerRetrieveParams", "retrieve"),
    ("POST", r"customers/(?P<id>[^/]+)", "CustomerModifyParams", "modify_customer"),
    ("POST", r"invoiceitems", "InvoiceItemCreateParams", "create_invoice_item"),
    ("GET", r"invoiceitems", "InvoiceItemListParams", "list"),
    ("GET", r"invoiceitems/(?P<id>[^/]+)", "InvoiceItemRetrieveParams", "retrieve"),
    ("GET", r"invoices", "InvoiceListParams", "list"),
    ("GET", r"invoices/(?P<id>[^/]+)", "InvoiceRetrieveParams", "retrieve"),
    ("POST", r"prices", "PriceCreateParams", "create_price"),
    ("GET", r"prices", "PriceListParams", "list"),
    ("GET", r"prices/(?P<id>[^/]+)", "PriceRetrieveParams", "retrieve"),
    ("POST", r"products", "ProductCreateParams", "create_product"),
    ("GET", r"products", "ProductListParams", "list"),
    ("GET", r"products/(?P<id>[^/]+)", "ProductRetrieveParams", "retrieve"),
    ("GET", r"products/(?P<id>[^/]+)/features", "ProductListFeaturesParams", "list_features"),
    ("GET", r"subscription_items", "SubscriptionItemListParams", "list"),
    ("GET", r"subscription_items/(?P<id>[^/]+)", "SubscriptionItemRetrieveParams", "retrieve"),
    ("POST", r"subscription_items/(?P<id>[^/]+)", "SubscriptionItemModifyParams", "modify_item"),
    ("GET", r"subscriptions", "SubscriptionListParams", "list"),
    ("GET", r"subscriptions/(?P<id>[^/]+)", "SubscriptionRetrieveParams", "retrieve"),
    ("POST", r"subscriptions/(?P<id>[^/]+)", "SubscriptionModifyParams", "modify_subscription"),
    ("DELETE", r"subscriptions/(?P<id>[^/]+)", "SubscriptionCancelParams", "cancel_subscription"),
]
KINDS = {
    "billing/meter_events": "billing.meter_event",
    "billing_portal/sessions": "billing_portal.session",
    "checkout/sessions": "checkout.session",
    "customers": "customer",
    "invoiceitems": "invoiceitem",
    "invoices": "invoice",
    "prices": "price",
    "products": "product",
    "subscription_items": "subscription_item",
    "subscriptions": "subscription",
}

# A new object of a type: Stripe's example with the values a fresh object of ours has (no
# discount, no test clock, nothing that would send dj-stripe after objects no test made).
_NO_TAX = {"enabled": False, "liability": None, "disabled_reason": None}
BLANK: dict[str, dict[str, Any]] = {
    "customer": {
        "address": None,
        "currency": None,
        "default_source": None,
        "discount": None,
        "email": None,
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "shipping": None,
    },
    "subscription": {
        "automatic_tax": _NO_TAX,
        "billing_cycle_anchor_config": None,
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "default_payment_method": None,
        "discounts": [],
        "ended_at": None,
        "latest_invoice": None,
        "managed_payments": None,
        "next_pending_invoice_item_invoice": None,
        "pause_collection": None,
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "test_clock": None,
        "transfer_data": None,
        "trial_end": None,
        "trial_start": None,
    },
    "subscription_item": {"billing_thresholds": None, "discounts": [], "tax_rates": []},
    "price": {"custom_unit_amount": None, "transform_quantity": None},
    "plan": {"transform_usage": None},
    "product": {
        "default_price": None,
        "description": None,
        "package_dimensions": None,
        "type": "service",
    },
    "invoice": {
        "automatic_tax": {**_NO_TAX, "status": None, "provider": None},
        "default_payment_method": None,
        "discounts": [],
        "from_invoice": None,
        "last_finalization_error": None,
        "latest_revision": None,
        "on_behalf_of": None,
        "parent": None,
        "shipping_cost": None,
        "subscription": None,
        "test_clock": None,
    },
    "invoiceitem": {"discounts": [], "parent": None, "tax_rates": [], "test_clock": None},
    "checkout.session": {
        "after_expiration": None,
        "automatic_tax": {"enabled": False, "liability": None, "status": None, "provider": None},
        "cancel_url": None,
        "consent": None,
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer_details": None,
        "invoice": None,
        "invoice_creation": None,
        "mode": "payment",
        "payment_intent": None,
        "payment_method_configuration_details": None,
        "payment_method_types": ["card"],
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "success_url": None,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted_page",
        "url": None,
    },
    "billing_portal.session": {"flow": None, "locale": None, "on_behalf_of": None},
}
# Stripe's list filters that compare a field of the object with the parameter.
FILTERS = ("active", "customer", "email", "mode", "product", "status", "subscription", "type")


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, str]
    id: str = ""
    replay_of: str = ""  # the request id whose answer this one replayed


@dataclass
class StripeStub:
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    idempotent: dict[str, tuple[tuple[str, str, str], int, dict[str, Any], str]] = field(
        default_factory=dict
    )
    # Meter events, as answered (they have no id, and Stripe serves no way to read them).
    meter_events: list[dict[str, Any]] = field(default_factory=list)
    # Checkout Session id -> its line items (``item`` objects), shown with expand[].
    line_items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Product id -> its ``product_feature`` objects.
    features: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Called before a request is answered; may raise to make the server answer 500.
    before: Callable[[Request], None] | None = None
    # Called after an answer is computed (and stored), before it is sent.
    after: Callable[[Request, int, dict[str, Any]], None] | None = None
    # (method, path regex, how, times left): requests to break, see ``fail``.
    failures: list[list[Any]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    order: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        with self.lock:
            self.objects.clear()
            self.requests.clear()
            self.idempotent.clear()
            self.meter_events.clear()
            self.line_items.clear()
            self.features.clear()
            self.failures.clear()
            self.order.clear()
            self.before = self.after = None

    # --- objects ---------------------------------------------------------------------

    def make(self, kind: str, **values: Any) -> dict[str, Any]:
        """A new object of ``kind`` in Stripe's shape, stored, with ``values`` set. A value
        for a key Stripe's object does not have is a mistake in the test: refused."""
        obj = blank(kind)
        number = next(self.counter)
        if "id" in obj:
            obj["id"] = f"{PREFIXES.get(kind, kind.replace('.', '_'))}_{number:06d}"
        for key, value in (("livemode", False), ("created", now()), ("metadata", {})):
            if key in obj:
                obj[key] = value
        if kind == "invoice":  # no lines until a test gives some
            obj["lines"] = listing([], f"/v1/invoices/{obj['id']}/lines")
        _refuse_keys(kind, obj, values)
        obj.update(values)
        if "id" in obj:
            self.order.setdefault(obj["id"], number)
            self.objects[obj["id"]] = obj
        return obj

    def customer(self, **values: Any) -> dict[str, Any]:
        return self.make("customer", **values)

    def price(self, id: str, unit_amount: int = 2000, **values: Any) -> dict[str, Any]:
        """The price ``id`` (monthly, licensed, per unit), made with its product if new."""
        if id in self.objects:
            return self.objects[id]
        product = self.make("product", name=f"Product of {id}")
        return self.make(
            "price",
            id=id,
            product=product["id"],
            unit_amount=unit_amount,
            unit_amount_decimal=str(unit_amount),
            **values,
        )

    def subscription(
        self,
        *,
        customer: str,
        price: str,
        status: str = "active",
        start: int | None = None,
        end: int | None = None,
        quantity: int = 1,
        prices: tuple[str, ...] | list[str] = (),
        **values: Any,
    ) -> dict[str, Any]:
        """A subscription of ``customer`` to ``price`` (and one item for each of
        ``prices``), its period from ``start`` to ``end`` on its items. A ``trialing`` one
        with ``trial_end`` has its trial from ``start`` to ``trial_end``, its period too."""
        start = start or now()
        trial_end = values.pop("trial_end", None)
        end = end or trial_end or start + 30 * DAY
        if trial_end:
            values.update(trial_start=start, trial_end=trial_end)
        if values.get("cancel_at_period_end"):
            values.setdefault("cancel_at", end)
        values.setdefault("billing_cycle_anchor", start)
        sub = self.make(
            "subscription",
            customer=customer,
            status=status,
            start_date=start,
            currency=self.price(price)["currency"],
            **values,
        )
        sub["items"] = {
            "object": "list",
            "data": [],
            "has_more": False,
            "url": f"/v1/subscription_items?subscription={sub['id']}",
        }
        self.set_price(sub["id"], price, start=start, end=end, quantity=quantity)
        for other in prices:
            self.add_item(sub["id"], other)
        return sub

    def set_price(
        self,
        sub_id: str,
        price: str,
        *,
        start: int | None = None,
        end: int | None = None,
        quantity: int | None = None,
    ) -> None:
        """The subscription's first item now bills ``price`` (an upgrade, say)."""
        sub = self.objects[sub_id]
        if not sub["items"]["data"]:
            self.add_item(sub_id, price, quantity=quantity or 1, start=start, end=end)
            return
        item = sub["items"]["data"][0]
        item.update(self._priced(price))
        if start:
            item["current_period_start"] = start
        if end:
            item["current_period_end"] = end
        if quantity is not None:
            item["quantity"] = quantity

    def add_item(
        self,
        sub_id: str,
        price: str,
        *,
        quantity: int = 1,
        start: int | None = None,
        end: int | None = None,
    ) -> dict[str, Any]:
        """A further item of the subscription, in the period of its first item."""
        sub = self.objects[sub_id]
        first = sub["items"]["data"][0] if sub["items"]["data"] else {}
        item = self.make(
            "subscription_item",
            subscription=sub_id,
            quantity=quantity,
            current_period_start=start or first.get("current_period_start") or now(),
            current_period_end=end or first.get("current_period_end") or now() + 30 * DAY,
            **self._priced(price),
        )
        sub["items"]["data"].append(item)
        return item

    def _priced(self, price_id: str) -> dict[str, Any]:
        """An item's ``price`` and its legacy twin ``plan``, as Stripe shows both."""
        price = copy.deepcopy(self.price(price_id))
        return {"price": price, "plan": plan_of(price)}

    def product_feature(self, product: str, lookup_key: str, name: str = "") -> dict[str, Any]:
        """A feature attached to ``product`` (``GET /v1/products/<id>/features``)."""
        feature = blank("entitlements.feature")
        feature.update(
            id=f"feat_test_{next(self.counter):06d}",
            lookup_key=lookup_key,
            name=name or lookup_key,
            metadata={},
        )
        attached = self.make("product_feature", entitlement_feature=feature)
        self.objects.pop(attached["id"])  # not served at /v1/<collection>/<id>
        self.features.setdefault(product, []).append(attached)
        return attached

    def update(self, obj_id: str, **values: Any) -> dict[str, Any]:
        obj = self.objects[obj_id]
        _refuse_keys(obj["object"], obj, values)
        obj.update(values)
        return obj

    def event(self, type: str, obj: dict[str, Any], **values: Any) -> dict[str, Any]:
        """An event carrying a snapshot of ``obj`` as it is now (later changes are not
        in it: dj-stripe must re-fetch)."""
        return self.make(
            "event",
            type=type,
            api_version=stripe.api_version or "2026-05-27.dahlia",
            data={"object": copy.deepcopy(obj)},
            pending_webhooks=1,
            request={"id": None, "idempotency_key": None},
            **values,
        )

    def calls(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.fullmatch(path, r.path)]

    def fail(self, method: str, path: str, how: str = "disconnect", times: int = 1) -> None:
        """Break the next ``times`` requests matching ``method`` and ``path`` (a regex) as
        no Stripe error does: ``disconnect`` closes the connection unanswered (stripe-python
        raises ``APIConnectionError``), ``html`` answers a proxy's 502 page (``APIError``)."""
        assert how in ("disconnect", "html")
        self.failures.append([method, path, how, times])

    def _failure(self, request: Request) -> str | None:
        with self.lock:
            for failure in self.failures:
                method, path, how, times = failure
                if times > 0 and method == request.method and re.fullmatch(path, request.path):
                    failure[3] -= 1
                    return how
        return None

    # --- the API ---------------------------------------------------------------------

    def answer(self, request: Request) -> tuple[int, dict[str, Any]]:
        with self.lock:
            request.id = request.id or f"req_{next(self.counter):06d}"
            self.requests.append(request)
            if self.before:
                self.before(request)
            key = request.headers.get("idempotency-key")
            if request.method == "POST" and key:
                fingerprint = (
                    request.method,
                    request.path,
                    json.dumps(request.params, sort_keys=True),
                )
                if key in self.idempotent:
                    seen, status, body, original = self.idempotent[key]
                    if seen != fingerprint:
                        return 400, StripeRefusal(
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other "
                            f"than '{key}' if you meant to execute a different request.",
                            type="idempotency_error",
                        ).body(request.id)
                    request.replay_of = original
                    return status, copy.deepcopy(body)
                status, body, stored = self._route(request)
                if stored:
                    self.idempotent[key] = (fingerprint, status, copy.deepcopy(body), request.id)
            else:
                status, body, _ = self._route(request)
            if self.after:
                self.after(request, status, body)
            return status, body

    def _route(self, request: Request) -> tuple[int, dict[str, Any], bool]:
        """Status, body, and whether an idempotency key keeps the answer (not when the
        request was refused for its parameters: Stripe began nothing)."""
        try:
            return 200, self.route(request), True
        except StripeRefusal as refusal:
            return refusal.status, refusal.body(request.id), refusal.code not in VALIDATION

    def route(self, request: Request) -> dict[str, Any]:
        if not request.headers.get("authorization", "").startswith("Bearer "):
            raise StripeRefusal(
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth.",
                status=401,
            )
        rest = request.path.removeprefix("/v1/").strip("/")
        for method, pattern, params, handler in ROUTES:
            found = re.fullmatch(pattern, rest)
            if found and method == request.method:
                check(request.params, params_type(params))
                collection = pattern.split("/(?P")[0]
                kind = KINDS.get(collection, collection)
                params = dict(request.params)
                expand = params.pop("expand", [])
                answer = getattr(self, handler)(kind, request, params, **found.groupdict())
                return self.expand(copy.deepcopy(answer), expand)
        raise StripeRefusal(
            f"Unrecognized request URL ({request.method}: {request.path}). Please see "
            "https://stripe.com/docs or we can help at https://support.stripe.com/.",
            status=404,
        )

    def get(self, kind: str, obj_id: str, *, param: str = "id", status: int = 400) -> dict:
        if obj_id == "" and param != "id":
            raise StripeRefusal(
                f"You passed an empty string for '{param}'. We assume empty values are an "
                f"attempt to unset a parameter; however '{param}' cannot be unset. You should "
                f"remove '{param}' from your request or supply a non-empty value.",
                code="parameter_invalid_empty",
                param=param,
            )
        obj = self.objects.get(obj_id)
        if obj is None or obj.get("object") != kind:
            raise missing(kind, obj_id, param=param, status=status)
        return obj

    # reading

    def retrieve(self, kind: str, request: Request, params: dict, id: str) -> dict[str, Any]:
        return self.get(kind, id, status=404)

    def account(self, kind: str, request: Request, params: dict) -> dict[str, Any]:
        if "acct_stub" not in self.objects:
            self.make("account", id="acct_stub")
        return self.objects["acct_stub"]

    def list(self, kind: str, request: Request, params: dict) -> dict[str, Any]:
        paging = {"limit", "starting_after", "ending_before"}
        if unmodelled := set(params) - set(FILTERS) - paging - {"created"}:
            raise NotImplementedError(
                f"The Stripe stand-in does not filter by {sorted(unmodelled)}."
            )
        found = [o for o in self.objects.values() if o.get("object") == kind]
        if kind == "subscription" and "status" not in params:
            found = [o for o in found if o["status"] != "canceled"]  # Stripe's default
        for name in FILTERS:
            if name in params:
                found = [o for o in found if self._matches(o, name, params[name])]
        if "created" in params:
            found = [o for o in found if _in_range(o["created"], params["created"])]
        return self.page(kind, found, request.path, params)

    def _matches(self, obj: dict[str, Any], name: str, wanted: Any) -> bool:
        kind = obj["object"]
        if kind == "subscription" and name == "status":
            if wanted == "all":
                return True
            if wanted == "ended":
                return obj["status"] in ("canceled", "incomplete_expired")
            return obj["status"] == wanted
        if kind == "invoice" and name == "subscription":
            details = (obj.get("parent") or {}).get("subscription_details") or {}
            return _id(details.get("subscription")) == wanted
        value = obj.get(name)
        if isinstance(value, bool):
            return ("true" if value else "false") == wanted
        return _id(value) == wanted

    def page(self, kind: str, found: list[dict], url: str, params: dict) -> dict[str, Any]:
        """One page of ``found``, newest first, as Stripe pages a list."""
        if "starting_after" in params and "ending_before" in params:
            raise StripeRefusal(
                "You may only specify one of these parameters: ending_before, starting_after.",
                code="parameters_exclusive",
                param="ending_before",
            )
        limit = int(params.get("limit", 10))
        if not 1 <= limit <= 100:
            raise StripeRefusal(
                f"Invalid limit: must be between 1 and 100 (received {limit}).", param="limit"
            )
        found = sorted(found, key=self._newest, reverse=True)
        if cursor := params.get("starting_after"):
            mark = self._newest(self.get(kind, cursor, param="starting_after"))
            older = [o for o in found if self._newest(o) < mark]
            return listing(older[:limit], url, has_more=len(older) > limit)
        if cursor := params.get("ending_before"):
            mark = self._newest(self.get(kind, cursor, param="ending_before"))
            newer = [o for o in found if self._newest(o) > mark]
            return listing(newer[-limit:], url, has_more=len(newer) > limit)
        return listing(found[:limit], url, has_more=len(found) > limit)

    def _newest(self, obj: dict[str, Any]) -> tuple[int, int]:
        return obj.get("created") or 0, self.order.get(obj.get("id", ""), 0)

    def list_features(self, kind: str, request: Request, params: dict, id: str) -> dict:
        self.get("product", id, status=404)
        features = self.features.get(id, [])
        limit = int(params.get("limit", 10))
        if not 1 <= limit <= 100:
            raise StripeRefusal(
                f"Invalid limit: must be between 1 and 100 (received {limit}).", param="limit"
            )
        ids = [f["id"] for f in features]
        start = ids.index(params["starting_after"]) + 1 if "starting_after" in params else 0
        return listing(
            features[start : start + limit], request.path, has_more=start + limit < len(features)
        )

    # writing

    def create_customer(self, kind: str, request: Request, params: dict) -> dict[str, Any]:
        customer = self.make(
            "customer",
            invoice_prefix=f"{abs(hash(request.id)) % 16**8:08X}",
        )
        return self._set(customer, params)

    def modify_customer(self, kind: str, request: Request, params: dict, id: str) -> dict:
        return self._set(self.get(kind, id, status=404), params)

    def _set(self, obj: dict[str, Any], params: dict[str, Any], *, ignore=()) -> dict:
        """Apply parameters that name a plain field of the object (``metadata`` merged as
        Stripe merges it); any other is more than the stand-in models: a 500 says so."""
        for name, value in params.items():
            if name in ignore:
                continue
            if name == "metadata":
                obj["metadata"] = merge_metadata(obj.get("metadata") or {}, value)
            elif (
                name in obj
                and isinstance(value, str)
                and (obj[name] is None or isinstance(obj[name], (str, int, bool)))
            ):
                obj[name] = _typed(obj[name], value) if value != "" else None
            else:
                raise NotImplementedError(
                    f"The Stripe stand-in does not model {name!r} on a {obj['object']}."
                )
        return obj

    def modify_subscription(self, kind: str, request: Request, params: dict, id: str) -> dict:
        sub = self.get(kind, id, status=404)
        if sub["status"] in ("canceled", "incomplete_expired") and set(params) - {
            "metadata",
            "cancellation_details",
        }:
            raise StripeRefusal(
                "A canceled subscription can only update its cancellation_details and metadata."
            )
        items = params.pop("items", [])
        for index, change in enumerate(items):
            self._change_item(sub, index, change)
        if "cancel_at_period_end" in params:
            at_end = params.pop("cancel_at_period_end") == "true"
            end = sub["items"]["data"][0]["current_period_end"]
            sub.update(cancel_at_period_end=at_end, cancel_at=end if at_end else None)
        return self._set(sub, params, ignore=("proration_behavior", "proration_date"))

    def _change_item(self, sub: dict[str, Any], index: int, change: dict[str, Any]) -> None:
        name = f"items[{index}]"
        ours = {item["id"]: item for item in sub["items"]["data"]}
        if "price" in change:
            self.get("price", change["price"], param=f"{name}[price]")
        if "id" in change:
            if change["id"] not in ours:
                raise missing("subscription_item", change["id"], param=f"{name}[id]")
            item = ours[change["id"]]
            if change.get("deleted") == "true":
                sub["items"]["data"].remove(item)
                self.objects.pop(item["id"], None)
                return
        else:
            if "price" not in change:
                raise StripeRefusal(
                    f"Missing required param: {name}[price].",
                    code="parameter_missing",
                    param=f"{name}[price]",
                )
            item = self.add_item(sub["id"], change["price"])
        if "price" in change:
            item.update(self._priced(change["price"]))
        if "quantity" in change:
            item["quantity"] = int(change["quantity"])
        if "metadata" in change:
            item["metadata"] = merge_metadata(item["metadata"], change["metadata"])
        unmodelled = set(change) - {"id", "price", "quantity", "metadata", "deleted"}
        if unmodelled:
            raise NotImplementedError(f"The Stripe stand-in does not model {sorted(unmodelled)}.")

    def modify_item(self, kind: str, request: Request, params: dict, id: str) -> dict:
        item = self.get(kind, id, status=404)
        sub = self.objects[item["subscription"]]
        self._change_item(sub, 0, {"id": id, **params})
        return item

    def cancel_subscription(self, kind: str, request: Request, params: dict, id: str) -> dict:
        sub = self.get(kind, id, status=404)
        sub.update(status="canceled", canceled_at=now(), ended_at=now())
        if details := params.get("cancellation_details"):
            sub["cancellation_details"] = {**sub["cancellation_details"], **details}
        return sub

    def create_checkout(self, kind: str, request: Request, params: dict) -> dict[str, Any]:
        mode = params.get("mode", "payment")
        ui_mode = params.get("ui_mode", "hosted_page")
        if ui_mode == "hosted_page" and mode == "subscription" and "success_url" not in params:
            raise StripeRefusal(
                "Missing required param: success_url.",
                code="parameter_missing",
                param="success_url",
            )
        if ui_mode != "hosted_page" and ("success_url" in params or "cancel_url" in params):
            name = "success_url" if "success_url" in params else "cancel_url"
            raise StripeRefusal(
                f"`{name}` is not supported when `ui_mode` is `{ui_mode}`.", param=name
            )
        lines = params.get("line_items", [])
        if mode in ("payment", "subscription") and not lines:
            raise StripeRefusal(
                f"`line_items` is required in `{mode}` mode.",
                code="parameter_missing",
                param="line_items",
            )
        if "customer" in params:
            self.get("customer", params["customer"], param="customer")
            if "customer_email" in params:
                raise StripeRefusal(
                    "You may only specify one of these parameters: customer, customer_email.",
                    code="parameters_exclusive",
                    param="customer",
                )
        items, recurring = [], False
        for index, line in enumerate(lines):
            name = f"line_items[{index}]"
            if "price" not in line:
                if "price_data" in line:
                    raise NotImplementedError("The Stripe stand-in does not model price_data.")
                raise StripeRefusal(
                    f"Missing required param: {name}[price].",
                    code="parameter_missing",
                    param=f"{name}[price]",
                )
            price = self.get("price", line["price"], param=f"{name}[price]")
            metered = (price.get("recurring") or {}).get("usage_type") == "metered"
            if "quantity" not in line and not metered:
                raise StripeRefusal(
                    f"Missing required param: {name}[quantity].",
                    code="parameter_missing",
                    param=f"{name}[quantity]",
                )
            if price["type"] == "recurring" and mode == "payment":
                raise StripeRefusal(
                    "You specified `payment` mode but passed a recurring price. Either switch "
                    "to `subscription` mode or use only one-time prices.",
                    param=f"{name}[price]",
                )
            recurring = recurring or price["type"] == "recurring"
            quantity = int(line.get("quantity", 1))
            amount = (price["unit_amount"] or 0) * quantity
            item = blank("item")
            item.update(
                id=f"li_{next(self.counter):06d}",
                amount_discount=0,
                amount_subtotal=amount,
                amount_tax=0,
                amount_total=amount,
                currency=price["currency"],
                description=self.objects.get(price["product"], {}).get("name", ""),
                price=copy.deepcopy(price),
                quantity=quantity,
                metadata={},
                adjustable_quantity=None,
            )
            items.append(item)
        if mode == "subscription" and not recurring:
            raise StripeRefusal(
                "You must provide at least one recurring price in `subscription` mode when "
                "using prices.",
                param="line_items",
            )
        total = sum(i["amount_total"] for i in items)
        session = self.make(
            kind,
            mode=mode,
            ui_mode=ui_mode,
            status="open",
            payment_status="unpaid",
            currency=items[0]["currency"] if items else None,
            amount_subtotal=total,
            amount_total=total,
            expires_at=now() + DAY,
            customer_email=params.get("customer_email"),
        )
        if ui_mode == "hosted_page":
            session["url"] = f"https://checkout.stripe.com/c/pay/{session['id']}"
        else:
            session["client_secret"] = f"{session['id']}_secret_{next(self.counter):06d}"
        self.line_items[session["id"]] = items
        plain = ("customer", "success_url", "cancel_url", "client_reference_id", "metadata")
        for name in plain:
            if name in params:
                session[name] = params[name]
        modelled = {
            *plain,
            "mode",
            "ui_mode",
            "line_items",
            "customer_email",
            "subscription_data",
            "payment_method_types",
            "allow_promotion_codes",
        }
        if unmodelled := set(params) - modelled:
            raise NotImplementedError(f"The Stripe stand-in does not model {sorted(unmodelled)}.")
        return session

    def create_portal(self, kind: str, request: Request, params: dict) -> dict[str, Any]:
        if "customer" not in params:
            raise StripeRefusal(
                "Missing required param: customer.", code="parameter_missing", param="customer"
            )
        self.get("customer", params["customer"], param="customer")
        if unmodelled := set(params) - {"customer", "return_url", "locale"}:
            raise NotImplementedError(f"The Stripe stand-in does not model {sorted(unmodelled)}.")
        session = self.make(
            kind,
            configuration="bpc_stub_default",
            customer=params["customer"],
            return_url=params.get("return_url"),
            locale=params.get("locale"),
        )
        session["url"] = f"https://billing.stripe.com/p/session/test_{session['id']}"
        self.objects.pop(session["id"])  # Stripe serves no GET for portal sessions
        return session

    def create_invoice_item(self, kind: str, request: Request, params: dict) -> dict[str, Any]:
        if "customer" not in params and "customer_account" not in params:
            raise StripeRefusal(
                "Missing required param: customer.", code="parameter_missing", param="customer"
            )
        customer = self.get("customer", params.get("customer", ""), param="customer")
        priced = [
            p for p in ("amount", "unit_amount_decimal", "price_data", "pricing") if p in params
        ]
        if not priced:
            raise StripeRefusal(
                "Missing required param: amount.", code="parameter_missing", param="amount"
            )
        if {"price_data", "pricing"} & set(priced):
            raise NotImplementedError("The Stripe stand-in does not model price_data or pricing.")
        if "amount" in params and "unit_amount_decimal" in params:
            raise StripeRefusal(
                "You may only specify one of these parameters: amount, unit_amount_decimal.",
                code="parameters_exclusive",
                param="amount",
            )
        currency = params.get("currency") or customer["currency"]
        if not currency:
            raise StripeRefusal(
                "Missing required param: currency.", code="parameter_missing", param="currency"
            )
        quantity = int(params.get("quantity", 1))
        if "amount" in params:
            amount = int(params["amount"])
            unit = Decimal(amount) / quantity
        else:
            unit = Decimal(params["unit_amount_decimal"])
            amount = int((unit * quantity).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        period = params.get("period") or {"start": now(), "end": now()}
        parent = None
        if sub_id := params.get("subscription"):
            self.get("subscription", sub_id, param="subscription")
            parent = {
                "subscription_details": {"subscription": sub_id},
                "type": "subscription_details",
            }
        item = self.make(
            kind,
            amount=amount,
            currency=currency,
            customer=customer["id"],
            date=now(),
            description=params.get("description"),
            discountable=params.get("discountable", "true") == "true",
            invoice=params.get("invoice"),
            metadata=merge_metadata({}, params.get("metadata") or {}),
            period={"end": int(period["end"]), "start": int(period["start"])},
            proration=False,
            quantity=quantity,
            quantity_decimal=str(quantity),
            net_amount=amount,
            customer_account=params.get("customer_account"),
            parent=parent,
            pricing={"type": "price_details", "unit_amount_decimal": f"{unit.normalize():f}"},
        )
        modelled = {
            "amount",
            "currency",
            "customer",
            "customer_account",
            "description",
            "discountable",
            "invoice",
            "metadata",
            "period",
            "quantity",
            "subscription",
            "unit_amount_decimal",
        }
        if unmodelled := set(params) - modelled:
            raise NotImplementedError(f"The Stripe stand-in does not model {sorted(unmodelled)}.")
        return item

    def create_meter_event(self, kind: str, request: Request, params: dict) -> dict[str, Any]:
        timestamp = int(params.get("timestamp", now()))
        if not now() - 35 * DAY <= timestamp <= now() + 300:
            raise StripeRefusal(
                "Timestamp must be within the past 35 calendar days or up to 5 minutes in the "
                "future.",
                param="timestamp",
            )
        identifier = params.get("identifier") or f"mtrevt_id_{next(self.counter):06d}"
        if any(e["identifier"] == identifier for e in self.meter_events):
            raise StripeRefusal(
                f"An event with identifier {identifier} already exists.", param="identifier"
            )
        event = self.make(
            kind,
            event_name=params["event_name"],
            identifier=identifier,
            payload=params["payload"],
            timestamp=timestamp,
        )
        self.meter_events.append(event)
        return event

    def create_price(self, kind: str, request: Request, params: dict) -> dict[str, Any]:
        if "product" not in params:
            raise NotImplementedError("The Stripe stand-in models prices of a product only.")
        self.get("product", params["product"], param="product")
        recurring = params.get("recurring")
        unit = params.get("unit_amount", params.get("unit_amount_decimal"))
        price = self.make(
            kind,
            currency=params["currency"],
            product=params["product"],
            unit_amount=int(Decimal(unit)) if unit is not None else None,
            unit_amount_decimal=f"{Decimal(unit):f}" if unit is not None else None,
            type="recurring" if recurring else "one_time",
            recurring={
                "interval": recurring["interval"],
                "interval_count": int(recurring.get("interval_count", 1)),
                "meter": recurring.get("meter"),
                "trial_period_days": None,
                "usage_type": recurring.get("usage_type", "licensed"),
            }
            if recurring
            else None,
        )
        rest = {k: v for k, v in params.items() if k not in ("currency", "product", "recurring")}
        return self._set(price, rest, ignore=("unit_amount", "unit_amount_decimal"))

    def create_product(self, kind: str, request: Request, params: dict) -> dict[str, Any]:
        product = self.make(kind, updated=now(), name=params["name"])
        return self._set(product, {k: v for k, v in params.items() if k != "name"})

    # expansion

    def expand(self, answer: dict[str, Any], paths: list[str]) -> dict[str, Any]:
        for index, path in enumerate(paths):
            parts = path.split(".")
            if len(parts) > 4:
                raise StripeRefusal(
                    "You cannot expand more than 4 levels of a property.",
                    param=f"expand[{index}]",
                )
            if answer.get("object") == "list":
                if parts[0] != "data":
                    raise StripeRefusal(
                        f"This property cannot be expanded ({path}). You may want to try "
                        f"expanding 'data.{path}' instead."
                    )
                for item in answer["data"]:
                    self._expand(item, parts[1:], path, None)
            else:
                self._expand(answer, parts, path, None)
        return answer

    def _expand(self, node: Any, parts: list[str], path: str, cls: type | None) -> None:
        if not parts or not isinstance(node, dict):
            return
        cls = resource_class(node.get("object", "")) or cls
        name, rest = parts[0], parts[1:]
        annotation = field_annotation(cls, name)
        cannot = StripeRefusal(f"This property cannot be expanded ({path}).")
        if annotation is None:
            raise cannot
        included = name not in node
        if included:
            node[name] = self._include(node, name)
        value = node[name]
        if is_list_field(annotation):
            if rest and rest[0] != "data":
                raise cannot
            for item in (value or {}).get("data", []) if rest else []:
                self._expand(item, rest[1:], path, None)
            return
        if is_expandable(annotation):
            if isinstance(value, list):
                node[name] = [self._resolve(v) for v in value]
                for v in node[name]:
                    self._expand(v, rest, path, None)
            else:
                node[name] = self._resolve(value)
                self._expand(node[name], rest, path, None)
            return
        inner = nested_class(annotation)
        if rest and inner is not None:
            self._expand(value, rest, path, inner)
        elif not included:
            raise cannot

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, str) and value in self.objects:
            return copy.deepcopy(self.objects[value])
        return value

    def _include(self, node: dict[str, Any], name: str) -> Any:
        """A field Stripe sends only when asked for it."""
        kind = node.get("object")
        if kind == "customer" and name in ("sources", "tax_ids", "subscriptions"):
            data = []
            if name == "subscriptions":
                data = [
                    copy.deepcopy(o)
                    for o in self.objects.values()
                    if o.get("object") == "subscription"
                    and o["customer"] == node["id"]
                    and o["status"] != "canceled"
                ]
            return listing(data, f"/v1/customers/{node['id']}/{name}")
        if kind == "price" and name == "currency_options":
            return {
                node["currency"]: {
                    "custom_unit_amount": None,
                    "tax_behavior": node["tax_behavior"],
                    "unit_amount": node["unit_amount"],
                    "unit_amount_decimal": node["unit_amount_decimal"],
                }
            }
        if kind == "price" and name == "tiers":
            return None if node["billing_scheme"] == "per_unit" else []
        if kind == "checkout.session" and name == "line_items":
            items = copy.deepcopy(self.line_items.get(node["id"], []))
            return listing(items, f"/v1/checkout/sessions/{node['id']}/line_items")
        if kind == "item" and name in ("discounts", "taxes"):
            return []  # a line item's discounts and taxes come only when asked for
        if name == "breakdown" and set(node) >= {"amount_discount", "amount_tax"}:
            return {"discounts": [], "taxes": []}
        raise NotImplementedError(f"The Stripe stand-in cannot include {name!r} on a {kind}.")

    # --- serving ---------------------------------------------------------------------

    def serve(self) -> str:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each answer waits for a delayed ACK

            def handle_one(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                params = nested(parse_qsl(body or url.query, keep_blank_values=True))
                request = Request(
                    self.command, url.path, params, {k.lower(): v for k, v in self.headers.items()}
                )
                how = stub._failure(request)
                if how == "disconnect":
                    stub.requests.append(request)
                    self.close_connection = True
                    return
                if how == "html":
                    stub.requests.append(request)
                    self._send(
                        502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"
                    )
                    return
                try:
                    status, answer = stub.answer(request)
                except Exception as exc:  # a test's fault injection, or unmodelled: a 500
                    status, answer = (
                        500,
                        StripeRefusal(
                            f"{type(exc).__name__}: {exc}", status=500, type="api_error"
                        ).body(request.id),
                    )
                headers = {"Request-Id": request.id}
                if request.replay_of:
                    headers.update(
                        {"Idempotent-Replayed": "true", "Original-Request": request.replay_of}
                    )
                self._send(status, json.dumps(answer).encode(), "application/json", headers)

            def _send(
                self, status: int, data: bytes, kind: str, headers: dict | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = handle_one

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}"


# Refusals for the parameters themselves: an idempotency key keeps no answer for them.
VALIDATION = {
    "parameter_unknown",
    "parameter_missing",
    "parameter_invalid_integer",
    "parameter_invalid_empty",
    "parameters_exclusive",
    None,
}


def blank(kind: str) -> dict[str, Any]:
    """Stripe's example of ``kind`` with the values of a new object of ours."""
    obj = fixture(kind)
    for key, value in copy.deepcopy(BLANK.get(kind, {})).items():
        assert key in obj, f"{key!r} is not a field of Stripe's {kind}"
        obj[key] = value
    return obj


def plan_of(price: dict[str, Any]) -> dict[str, Any]:
    """The ``plan`` Stripe shows beside an item's recurring ``price``: the same thing in
    the older API's terms."""
    recurring = price.get("recurring") or {}
    plan = blank("plan")
    plan.update(
        id=price["id"],
        active=price["active"],
        amount=price["unit_amount"],
        amount_decimal=price["unit_amount_decimal"],
        billing_scheme=price["billing_scheme"],
        created=price["created"],
        currency=price["currency"],
        interval=recurring.get("interval"),
        interval_count=recurring.get("interval_count"),
        livemode=price["livemode"],
        metadata=copy.deepcopy(price["metadata"]),
        meter=recurring.get("meter"),
        nickname=price["nickname"],
        product=price["product"],
        tiers_mode=price["tiers_mode"],
        trial_period_days=recurring.get("trial_period_days"),
        usage_type=recurring.get("usage_type"),
    )
    return plan


def _refuse_keys(kind: str, obj: dict[str, Any], values: dict[str, Any]) -> None:
    if extra := set(values) - set(obj):
        raise TypeError(f"Stripe's {kind} has no {sorted(extra)}: a test may set only its keys.")


def _typed(current: Any, value: Any) -> Any:
    if isinstance(current, bool):
        return value == "true"
    if isinstance(current, int):
        return int(value)
    return value


def _in_range(created: int, wanted: Any) -> bool:
    if isinstance(wanted, str):
        return created == int(wanted)
    tests = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}
    return all(tests[op](created, int(v)) for op, v in wanted.items())


def merge_metadata(current: dict[str, str], change: Any) -> dict[str, str]:
    """Stripe's metadata update: keys merged, an empty value removes its key, an empty
    string for the whole map removes every key."""
    if change == "":
        return {}
    merged = {**current, **change}
    return {k: v for k, v in merged.items() if v != ""}


def now() -> int:
    return int(time.time())


def _id(value: Any) -> Any:
    return value.get("id") if isinstance(value, dict) else value


def error(message: str, type: str = "invalid_request_error", code: str | None = None) -> dict:
    """Stripe's error body (kept for callers of the earlier stand-in)."""
    return StripeRefusal(message, type=type, code=code).body("req_stub")


def listing(data: list[dict[str, Any]], url: str, has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def nested(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (``items[0][price]=p``) back into dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        names = re.findall(r"[^\[\]]+", key)
        node = root
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = value

    def listify(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        node = {k: listify(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
        return node

    return listify(root)


def sign(payload: str, secret: str = WEBHOOK_SECRET) -> str:
    """The ``Stripe-Signature`` header Stripe would send with ``payload``."""
    return stripe.WebhookSignature.generate_signature_header(payload, secret)
