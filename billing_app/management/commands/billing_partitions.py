from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.utils import timezone

from billing_app.metering.partitions import (
    RetentionRefused,
    events_drop_before,
    events_partition,
    partitions_ensure,
)


class Command(BaseCommand):
    help = (
        "PostgreSQL: keep the monthly partitions of the usage events ready (billing_close_cycles "
        "does it too), and with --retain-months N drop the events of the months before the "
        "last N, with their quota windows' counters. Refused while those events may still "
        "be needed (late usage, unrecorded periods, an open window spanning them)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--retain-months", type=int, help="Keep this month and the N-1 before it."
        )

    def handle(self, *args: Any, retain_months: int | None = None, **options: Any) -> None:
        if events_partition():
            self.stdout.write("usage events: partitioned by month")
        for name in partitions_ensure():
            self.stdout.write(f"created {name}")
        if retain_months is None:
            return
        if retain_months < 1:
            raise CommandError("--retain-months must be at least 1.")
        now = timezone.now()
        index = now.year * 12 + now.month - 1 - (retain_months - 1)
        cutoff = datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)
        try:
            dropped = events_drop_before(month=cutoff)
        except RetentionRefused as error:
            raise CommandError(str(error)) from None
        for name in dropped:
            self.stdout.write(f"dropped {name}")
        if connection.vendor != "postgresql":
            self.stderr.write("Nothing to do: usage events are partitioned on PostgreSQL only.")
            return
        self.stderr.write(f"Events before {cutoff:%Y-%m} removed.")
