"""A Stripe stand-in on loopback, so dj-stripe's sync and our Stripe calls run unchanged.

Objects are built from Stripe's own examples (``../shared/stripe/fixtures3.json``, copied
to ``tests/stripe_fixtures.json``) with the values a test sets. The server keeps what it is
given, answers ``GET``/``POST``/``DELETE`` on ``/v1/<collection>[/<id>]`` as Stripe does
for the calls we and dj-stripe make, records every request, and honours
``Idempotency-Key`` as Stripe does: the same key and parameters replay the first answer,
the same key with other parameters is a 400 ``idempotency_error``.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe

FIXTURES = json.loads((Path(__file__).parent / "stripe_fixtures.json").read_text())["resources"]
WEBHOOK_SECRET = "whsec_test_suite"

# Collection path -> (object type, id prefix).
COLLECTIONS = {
    "account": ("account", "acct"),
    "billing/meter_events": ("billing.meter_event", "mtrevt"),
    "billing_portal/sessions": ("billing_portal.session", "bps"),
    "checkout/sessions": ("checkout.session", "cs_test"),
    "customers": ("customer", "cus"),
    "invoiceitems": ("invoiceitem", "ii"),
    "invoices": ("invoice", "in"),
    "prices": ("price", "price"),
    "products": ("product", "prod"),
    "subscription_items": ("subscription_item", "si"),
    "subscriptions": ("subscription", "sub"),
}
PREFIXES = {**dict(COLLECTIONS.values()), "event": "evt"}

# Example values that would send dj-stripe after objects no test made: start blank.
BLANK = {
    "customer": {"discount": None, "default_source": None, "sources": None, "email": None},
    "subscription": {
        "cancel_at": None,
        "canceled_at": None,
        "ended_at": None,
        "discounts": [],
        "latest_invoice": None,
        "pending_setup_intent": None,
        "schedule": None,
        "test_clock": None,
        "trial_end": None,
        "trial_start": None,
        "default_payment_method": None,
        "pending_update": None,
        "cancel_at_period_end": False,
        "metadata": {},
    },
    "invoice": {
        "charge": None,
        "payment_intent": None,
        "default_payment_method": None,
        "discounts": [],
        "from_invoice": None,
        "last_finalization_error": None,
        "latest_revision": None,
        "test_clock": None,
        "subscription": None,
        "on_behalf_of": None,
        "parent": None,
    },
    "checkout.session": {"payment_intent": None, "setup_intent": None, "invoice": None},
}


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, str]


@dataclass
class StripeStub:
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    idempotent: dict[str, tuple[tuple[str, str, str], int, dict[str, Any]]] = field(
        default_factory=dict
    )
    # Called before a request is answered; may raise to make the server answer 500.
    before: Callable[[Request], None] | None = None
    # Called after an answer is computed (and stored), before it is sent.
    after: Callable[[Request, int, dict[str, Any]], None] | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    def reset(self) -> None:
        with self.lock:
            self.objects.clear()
            self.requests.clear()
            self.idempotent.clear()
            self.before = self.after = None

    # --- objects ---------------------------------------------------------------------

    def make(self, kind: str, **values: Any) -> dict[str, Any]:
        """A new object of ``kind`` in Stripe's shape, stored, with ``values`` set."""
        obj = copy.deepcopy(FIXTURES[kind])
        obj.update(copy.deepcopy(BLANK.get(kind, {})))
        prefix = PREFIXES.get(kind, kind.replace(".", "_"))
        obj.update(id=f"{prefix}_{next(self.counter):06d}", livemode=False, created=now())
        if "metadata" in obj:
            obj["metadata"] = {}
        obj.update(values)
        self.objects[obj["id"]] = obj
        return obj

    def customer(self, **values: Any) -> dict[str, Any]:
        return self.make("customer", **values)

    def price(self, id: str, unit_amount: int = 2000, **values: Any) -> dict[str, Any]:
        if id in self.objects:
            return self.objects[id]
        product = self.make("product", name=f"Product of {id}", default_price=None)
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
        **values: Any,
    ) -> dict[str, Any]:
        start = start or now()
        end = end or start + 30 * 86400
        sub = self.make("subscription", customer=customer, status=status, **values)
        sub["items"] = {
            "object": "list",
            "data": [],
            "has_more": False,
            "url": f"/v1/subscription_items?subscription={sub['id']}",
            "total_count": 1,
        }
        self.set_price(sub["id"], price, start=start, end=end)
        return sub

    def set_price(
        self, sub_id: str, price: str, *, start: int | None = None, end: int | None = None
    ) -> None:
        """The subscription's single item now bills ``price`` (an upgrade, say)."""
        sub = self.objects[sub_id]
        old = sub["items"]["data"][0] if sub["items"]["data"] else {}
        item = self.make(
            "subscription_item",
            subscription=sub_id,
            price=copy.deepcopy(self.price(price)),
            quantity=1,
            current_period_start=start or old.get("current_period_start"),
            current_period_end=end or old.get("current_period_end"),
        )
        item.pop("plan", None)
        if old:
            item["id"] = old["id"]
            self.objects.pop(item["id"], None)
            self.objects[old["id"]] = item
        sub["items"]["data"] = [item]

    def update(self, obj_id: str, **values: Any) -> dict[str, Any]:
        self.objects[obj_id].update(values)
        return self.objects[obj_id]

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

    # --- the API ---------------------------------------------------------------------

    def answer(self, request: Request) -> tuple[int, dict[str, Any]]:
        with self.lock:
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
                    seen, status, body = self.idempotent[key]
                    if seen != fingerprint:
                        return 400, error(
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with.",
                            type="idempotency_error",
                        )
                    return status, copy.deepcopy(body)
                status, body = self.route(request)
                self.idempotent[key] = (fingerprint, status, copy.deepcopy(body))
            else:
                status, body = self.route(request)
            if self.after:
                self.after(request, status, body)
            return status, body

    def route(self, request: Request) -> tuple[int, dict[str, Any]]:
        parts = request.path.removeprefix("/v1/").strip("/").split("/")
        for size in (2, 1):
            collection = "/".join(parts[:size])
            if collection in COLLECTIONS:
                rest = parts[size:]
                break
        else:
            return 404, error(f"Unrecognized request URL ({request.method}: {request.path}).")
        kind = COLLECTIONS[collection][0]
        method = request.method
        if collection == "products" and rest[1:] == ["features"]:
            return 200, listing([], request.path)
        if collection == "account":
            if "acct_stub" not in self.objects:
                self.make("account", id="acct_stub")
            return 200, self.objects["acct_stub"]
        if not rest:
            if method == "GET":
                return 200, self.list(kind, request)
            if method == "POST":
                return 200, self.create(kind, request.params)
        elif len(rest) == 1:
            obj = self.objects.get(rest[0])
            if obj is None or obj.get("object") != kind:
                return 404, error(f"No such {kind}: '{rest[0]}'", code="resource_missing")
            if method == "GET":
                return 200, obj
            if method == "POST":
                return 200, self.modify(obj, request.params)
            if method == "DELETE" and kind == "subscription":
                return 200, self.cancel_now(obj)
        return 404, error(f"Unrecognized request URL ({method}: {request.path}).")

    def list(self, kind: str, request: Request) -> dict[str, Any]:
        filters = {
            k: v for k, v in request.params.items() if k in ("customer", "subscription", "status")
        }
        found = [
            o
            for o in self.objects.values()
            if o.get("object") == kind
            and all(
                _id(o.get(k)) == v for k, v in filters.items() if not (k == "status" and v == "all")
            )
        ]
        found.sort(key=lambda o: o.get("created", 0), reverse=True)
        return listing(found, request.path)

    def create(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        params = {k: v for k, v in params.items() if k != "expand"}
        if kind == "checkout.session":
            session = self.make(kind, status="open", **params)
            session["url"] = f"https://checkout.stripe.com/c/pay/{session['id']}"
            return session
        if kind == "billing_portal.session":
            session = self.make(kind, **params)
            session["url"] = f"https://billing.stripe.com/p/session/{session['id']}"
            return session
        if kind == "invoiceitem":
            return self.make(kind, **{**params, "amount": int(params.get("amount", 0))})
        return self.make(kind, **params)

    def modify(self, obj: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        params = {k: v for k, v in params.items() if k != "expand"}
        if obj["object"] == "subscription":
            for item in params.pop("items", []):
                self.set_price(obj["id"], item["price"])
            if "cancel_at_period_end" in params:
                at_end = params.pop("cancel_at_period_end") == "true"
                end = obj["items"]["data"][0]["current_period_end"]
                obj.update(cancel_at_period_end=at_end, cancel_at=end if at_end else None)
        if "metadata" in params:
            obj["metadata"] = {**obj.get("metadata", {}), **params.pop("metadata")}
        obj.update(params)
        return obj

    def cancel_now(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj.update(status="canceled", canceled_at=now(), ended_at=now(), cancel_at_period_end=False)
        return obj

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
                try:
                    status, answer = stub.answer(request)
                except Exception as exc:  # a test's fault injection: Stripe answers 500
                    status, answer = 500, error(str(exc), type="api_error")
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", f"req_{next(stub.counter)}")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = handle_one

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}"


def now() -> int:
    return int(time.time())


def _id(value: Any) -> Any:
    return value.get("id") if isinstance(value, dict) else value


def error(message: str, type: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "code": code}}


def listing(data: list[dict[str, Any]], url: str) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": False, "url": url}


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
