"""Receivers of other apps' signals. Idempotent; they hand every decision to services.

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
