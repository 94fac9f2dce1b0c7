from typing import Any

from django.core.management.base import BaseCommand

from billing_app import cycles


class Command(BaseCommand):
    help = (
        "Close every billing cycle that has ended (its usage record becomes 'recorded') and "
        "open the next. Idempotent and safe to run from several schedulers at once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        closed = cycles.close_cycles()
        for record in closed:
            self.stdout.write(
                f"user {record.user_id}: {record.cycle_start:%Y-%m-%d} to "
                f"{record.cycle_end:%Y-%m-%d} on {record.plan.key} recorded"
            )
        self.stderr.write(f"{len(closed)} cycle(s) closed.")
