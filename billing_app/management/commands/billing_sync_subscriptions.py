from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing_app.customers.selectors import customer_get
from billing_app.exceptions import BillingError, NotFound
from billing_app.stripe.sync import subscriptions_resync


class Command(BaseCommand):
    help = (
        "Re-read subscriptions from Stripe and apply them to their customers: recovery after "
        "missed webhooks. Prints what happened to each subscription read; those that cannot "
        "be applied are kept as billing problems."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--customer", "--user", dest="customer", help="Only this customer's (an id)."
        )

    def handle(self, *args: Any, customer: str | None = None, **options: Any) -> None:
        try:
            found = customer_get(customer_id=customer) if customer is not None else None
            results = subscriptions_resync(customer=found)
        except NotFound as error:
            raise CommandError(str(error)) from None
        except BillingError as error:
            raise CommandError(str(error)) from None
        for stripe_id, stripe_status, applied in results:
            if applied is None:
                outcome = "not applied (see the billing problems)"
            elif applied.stripe_subscription_id != stripe_id:
                outcome = (
                    f"not followed: customer {applied.customer_id} follows "
                    f"{applied.stripe_subscription_id}"
                )
            else:
                outcome = f"customer {applied.customer_id} on {applied.plan.key} ({applied.status})"
            self.stdout.write(f"{stripe_id} ({stripe_status}): {outcome}")
        self.stderr.write(f"{len(results)} subscription(s) synced.")
