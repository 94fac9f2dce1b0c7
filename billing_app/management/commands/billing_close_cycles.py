from typing import Any

from django.core.management.base import BaseCommand

from billing_app.cycles.services import advance_charges_add, records_close
from billing_app.metering.partitions import partitions_ensure
from billing_app.subscriptions.services import periods_advance


class Command(BaseCommand):
    help = (
        "Open the next billing period of subscriptions whose period has run out (ending "
        "those set to cancel at period end, carrying out trials that ended), charge the "
        "periods that opened with in-advance prices, then record every period that has "
        "ended. "
        "Idempotent and safe to run from several schedulers at once; one customer's failure "
        "is logged and kept as a Problem, and the others go on."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        partitions_ensure()
        failures = periods_advance()
        for pk, error in failures:
            self.stderr.write(f"subscription {pk}: {error}")
        charged = advance_charges_add()
        if charged:
            self.stderr.write(f"{len(charged)} period(s) charged in advance.")
        closed = records_close()
        for record in closed:
            self.stdout.write(
                f"customer {record.customer_id}: {record.period.start:%Y-%m-%d} to "
                f"{record.period.end:%Y-%m-%d} on {record.plan.key} {record.status}"
            )
        self.stderr.write(f"{len(closed)} period(s) recorded.")
