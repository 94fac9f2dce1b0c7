"""Celery tasks, when Celery is installed (``pip install billing_app[celery]``).

Schedule ``billing_app.close_cycles`` and ``billing_app.deliver_outbox`` with beat;
docs/reference.md has an example.
"""

from __future__ import annotations

from celery import shared_task

from .cycles.services import advance_charges_add, records_close
from .metering.partitions import partitions_ensure
from .outbox.services import deliver
from .subscriptions.services import periods_advance


@shared_task(name="billing_app.close_cycles")
def close_cycles() -> int:
    """Advance billing periods, charge those opened with in-advance prices, and record
    those that have ended; answers how many were recorded."""
    partitions_ensure()
    periods_advance()
    advance_charges_add()
    return len(records_close())


@shared_task(name="billing_app.deliver_outbox")
def deliver_outbox() -> int:
    """Deliver due outbox messages; answers how many were delivered."""
    return deliver()
