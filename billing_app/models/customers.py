"""What belongs to a customer apart from its subscription: its kit, its entitlement's
version, and the keys that act for it."""

from __future__ import annotations

from typing import ClassVar, TypeVar

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _
from rest_framework_api_key.crypto import KeyGenerator
from rest_framework_api_key.models import AbstractAPIKey, APIKeyManager

from ..conf import customer_model_label
from .catalog import AccountKit, PrimitiveField

CUSTOMER_MODEL = customer_model_label()


class EntitlementVersion(models.Model):
    """Raised in the transaction of every change to what a customer may do (subscription,
    plan, quotas, kit, seats, grants). A reservation checks it in its own statement, so no
    process admits a call on an entitlement older than the last committed change."""

    customer = models.OneToOneField(
        CUSTOMER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.customer_id} v{self.version}"


class KitAssignment(models.Model):
    """The Account Kit of a customer: at most one, set with its subscription or directly."""

    customer = models.OneToOneField(
        CUSTOMER_MODEL, on_delete=models.CASCADE, related_name="billing_kit"
    )
    kit = models.ForeignKey(AccountKit, on_delete=models.PROTECT, related_name="assignments")
    assigned_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.customer}: {self.kit}"


class QuotaGrant(models.Model):
    """A one-off increase of a customer's quota of one primitive for one quota window,
    granted by an operator: who, how much, and why."""

    customer = models.ForeignKey(CUSTOMER_MODEL, on_delete=models.CASCADE, related_name="+")
    primitive = PrimitiveField()
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    amount = models.PositiveBigIntegerField()
    reason = models.TextField()
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    granted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-granted_at"]
        indexes = [models.Index(fields=["customer", "window_end"], name="billing_grant_window_idx")]

    def __str__(self) -> str:
        return f"+{self.amount} {self.primitive} for {self.customer}"


class PrefixedKeyGenerator(KeyGenerator):
    """Keys look like ``sk_<prefix>.<secret>``: recognisable in logs and by secret scanners."""

    def __init__(self, scheme: str) -> None:
        super().__init__()
        self.scheme = scheme

    def generate(self) -> tuple[str, str, str]:
        prefix = self.get_prefix()
        key = f"{self.scheme}{prefix}.{self.get_secret_key()}"
        return key, prefix, self.hash(key)


_Key = TypeVar("_Key", bound=AbstractAPIKey)


class PrefixedKeyManager(APIKeyManager[_Key]):
    key_generator: PrefixedKeyGenerator

    def get_from_key(self, key: str) -> _Key:
        scheme = self.key_generator.scheme
        if not key.startswith(scheme):
            raise self.model.DoesNotExist("Not a key of this kind.")
        prefix = key[len(scheme) :].partition(".")[0]
        # Prefixes are letters and digits: anything else (a NUL PostgreSQL would refuse
        # with an error) is no key, and never reaches the database.
        if not (prefix.isascii() and prefix.isalnum()):
            raise self.model.DoesNotExist("Not a key of this kind.")
        api_key = self.get_usable_keys().get(prefix=prefix)
        if not api_key.is_valid(key) or api_key.has_expired:
            raise self.model.DoesNotExist("Key is not valid.")
        return api_key


class OperatorKeyManager(PrefixedKeyManager["OperatorKey"]):
    key_generator = PrefixedKeyGenerator("sk_")


class TenantTokenManager(PrefixedKeyManager["TenantToken"]):
    key_generator = PrefixedKeyGenerator("tk_")

    def get_usable_keys(self) -> models.QuerySet[TenantToken]:
        # The customer and grantee come with the key: one query authenticates a call.
        return super().get_usable_keys().select_related("customer", "grantee")


class OperatorKey(AbstractAPIKey):
    """A secret key of the operator, for the ``/v1/`` API. Stored hashed (SHA-512)."""

    objects: ClassVar[OperatorKeyManager] = OperatorKeyManager()

    class Meta:
        ordering = ("-created",)
        verbose_name = _("operator key")
        verbose_name_plural = _("operator keys")


class TenantToken(AbstractAPIKey):
    """A customer's API token, for metered calls and ``/billing/``. Stored hashed. It may
    name the grantee (a user holding one of the customer's seats) it was issued to."""

    objects: ClassVar[TenantTokenManager] = TenantTokenManager()
    customer = models.ForeignKey(
        CUSTOMER_MODEL, on_delete=models.CASCADE, related_name="billing_tokens"
    )
    grantee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ("-created",)
        verbose_name = _("tenant token")
        verbose_name_plural = _("tenant tokens")
