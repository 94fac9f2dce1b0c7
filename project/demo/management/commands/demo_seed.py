"""Loads the demo's plans, kits and tenant, and prints fresh keys (once) to try the API
and the logins to try the billing page and the admin."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from billing_app.catalog import services as catalog
from billing_app.customers import services as customers
from billing_app.subscriptions import services as subscriptions

TENANT_PASSWORD = "tenant"
PLANS = {
    "free": {"name": "Free", "quotas": {"seo": 10, "aeo": 5, "email.send": 20}},
    "pro": {"name": "Pro", "quotas": {"seo": 1000, "aeo": 250, "email.send": 5000}},
}


DEFAULT_ADDRESS = "127.0.0.1:8000"  # runserver's default, and scripts/demo's


def base_url(address: str) -> str:
    """``8001`` -> ``http://127.0.0.1:8001``; ``0.0.0.0:9000`` -> ``http://0.0.0.0:9000``:
    runserver's address, as runserver itself prints it."""
    if address.isdigit():
        address = f"127.0.0.1:{address}"
    return f"http://{address}"


class Command(BaseCommand):
    help = "Load the demo's plans, kits, tenant, admin user and keys (idempotent)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--address",
            default=DEFAULT_ADDRESS,
            help="Where the demo is served: runserver's [host:]port (scripts/demo passes it).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        base = base_url(options["address"])
        for key, plan in PLANS.items():
            primitives = {slug: None for slug in plan["quotas"]}
            catalog.account_kit_upsert(
                key=f"kit_{key}", name=f"{plan['name']} kit", primitives=primitives
            )
            catalog.plan_upsert(
                key=key,
                name=plan["name"],
                account_kit_id=f"kit_{key}",
                quotas=plan["quotas"],
                period="month",
            )
        User = get_user_model()
        tenant = User.objects.filter(email="tenant@example.com").first()
        if tenant is None:
            tenant = customers.customer_create(email="tenant@example.com")
        subscriptions.subscription_set(customer=tenant, plan_key="free", status="active")
        if not tenant.has_usable_password():
            # A person logs in as the tenant to see its billing page.
            tenant.set_password(TENANT_PASSWORD)
            tenant.save(update_fields=["password"])
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", "admin@example.com", "admin")

        _, operator_key = customers.operator_key_create(name="demo")
        _, tenant_token = customers.tenant_token_issue(customer=tenant, name="demo")
        self.stdout.write(
            "\nDemo data loaded: plans free and pro, kits kit_free and kit_pro,\n"
            f"tenant tenant@example.com (id {tenant.pk}) on the free plan.\n"
            f"Billing page: {base}/billing/account/  "
            f"(user {tenant.get_username()}, password {TENANT_PASSWORD})\n"
            f"Admin: {base}/admin/  (user admin, password admin)\n"
            "Keys, shown once (only their hashes are stored):\n"
            f"  export OPERATOR_KEY={operator_key}\n"
            f"  export TENANT_TOKEN={tenant_token}\n"
            f"  export TENANT_ID={tenant.pk}\n"
        )
