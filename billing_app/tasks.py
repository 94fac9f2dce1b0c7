"""Celery tasks, when Celery is installed (``pip install billing_app[celery]``).

Schedule ``billing_app.tasks.close_cycles`` with beat; docs/reference.md has an example.
"""

from __future__ import annotations

from celery import shared_task

from . import cycles, outbox


@shared_task(name="billing_app.close_cycles")
def close_cycles() -> int:
    """Close the billing cycles that have ended; answers how many."""
    return len(cycles.close_cycles())


@shared_task(name="billing_app.deliver_outbox")
def deliver_outbox() -> int:
    """Deliver due outbox messages; answers how many were delivered."""
    return outbox.deliver()
