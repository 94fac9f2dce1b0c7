from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from billing_app.outbox.services import deliver


class Command(BaseCommand):
    help = (
        "Deliver due outbox messages (overage charges to Stripe, webhooks), with retries. "
        "Run it every minute, or use the Celery task billing_app.deliver_outbox."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--limit", type=int, default=1000, help="At most this many.")

    def handle(self, *args: Any, limit: int, **options: Any) -> None:
        self.stderr.write(f"{deliver(limit=limit)} message(s) delivered.")
