from typing import Any

import stripe
from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing_app import selectors, stripe_sync
from billing_app.exceptions import NotFound


class Command(BaseCommand):
    help = (
        "Re-read subscriptions from Stripe and apply them to their tenants: recovery after "
        "missed webhooks. Subscriptions that cannot be applied are listed as problems."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", help="Only this tenant's Stripe customers (a user id).")

    def handle(self, *args: Any, user: str | None = None, **options: Any) -> None:
        try:
            tenant = selectors.tenant_get(user_id=user) if user is not None else None
            results = stripe_sync.subscriptions_resync(user=tenant)
        except NotFound as error:
            raise CommandError(str(error.detail)) from None
        except stripe.StripeError as error:
            raise CommandError(f"Stripe refused: {error}") from None
        for stripe_id, applied in results:
            if applied is None:
                self.stdout.write(f"{stripe_id}: not applied (see Stripe sync problems)")
            else:
                self.stdout.write(
                    f"{stripe_id}: user {applied.user_id} on {applied.plan.key} ({applied.status})"
                )
        self.stderr.write(f"{len(results)} subscription(s) synced.")
