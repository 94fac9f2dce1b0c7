"""Receivers of other apps' signals. Idempotent; they hand every decision to services.

dj-stripe's webhook signals: each receiver takes only an id from the event and lets
``stripe_sync.subscription_sync`` read what Stripe holds now, so duplicates and any order
of delivery end on Stripe's current state. Importing ``djstripe.event_handlers`` first
connects dj-stripe's own handlers first: its copy is synced before ours run. A receiver's
error propagates, which rolls the event back and makes Stripe retry it.

Model signals keep the entitlement cache true whatever changed a plan, kit or subscription
(a service, the admin, a shell): a tenant's entry goes when its subscription or kit
assignment changes, every entry when a plan, quota or kit changes. Each drop happens now
and again after commit, so no process caches what a rolled-back or unfinished transaction
showed.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from djstripe.event_handlers import djstripe_receiver

from . import stripe_sync
from .models import AccountKit, KitAssignment, KitPrimitive, Plan, PlanQuota, Subscription
from .selectors import entitlement_forget


def _forget(user_id: Any = None) -> None:
    entitlement_forget(user_id=user_id)
    transaction.on_commit(lambda: entitlement_forget(user_id=user_id))


@receiver([post_save, post_delete], sender=Subscription)
@receiver([post_save, post_delete], sender=KitAssignment)
def forget_tenant_entitlement(sender: Any, instance: Any, **kwargs: Any) -> None:
    _forget(instance.user_id)


@receiver([post_save, post_delete], sender=Plan)
@receiver([post_save, post_delete], sender=PlanQuota)
@receiver([post_save, post_delete], sender=AccountKit)
@receiver([post_save, post_delete], sender=KitPrimitive)
def forget_all_entitlements(sender: Any, **kwargs: Any) -> None:
    _forget()


SUBSCRIPTION_EVENTS = [
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
]


@djstripe_receiver(SUBSCRIPTION_EVENTS)
def apply_subscription(sender: Any, event: Any, **kwargs: Any) -> None:
    stripe_sync.subscription_sync(event.data["object"]["id"], event_id=event.id)


@djstripe_receiver("checkout.session.completed")
def apply_checkout(sender: Any, event: Any, **kwargs: Any) -> None:
    session = event.data["object"]
    if session.get("mode") == "subscription" and session.get("subscription"):
        stripe_sync.subscription_sync(
            stripe_sync.stripe_id(session["subscription"]), event_id=event.id
        )


@djstripe_receiver(["invoice.paid", "invoice.payment_failed"])
def apply_invoice(sender: Any, event: Any, **kwargs: Any) -> None:
    """A paid or failed invoice moves its subscription's status (past_due, active)."""
    if subscription_id := stripe_sync.invoice_subscription_id(event.data["object"]):
        stripe_sync.subscription_sync(subscription_id, event_id=event.id)
