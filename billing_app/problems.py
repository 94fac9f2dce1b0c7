"""The only writer of :class:`Problem`: what the app could not do alone, for the admin."""

from __future__ import annotations

import logging

from django.db.models import F

from .models import Problem

logger = logging.getLogger(__name__)


def problem_record(*, kind: str, subject: str, detail: str, stripe_event_id: str = "") -> Problem:
    """Record (or update) the problem with ``subject``; logged as a warning."""
    problem, created = Problem.objects.get_or_create(
        subject=subject,
        defaults={"kind": kind, "detail": detail, "stripe_event_id": stripe_event_id},
    )
    if not created:
        Problem.objects.filter(pk=problem.pk).update(
            kind=kind,
            detail=detail,
            stripe_event_id=stripe_event_id or problem.stripe_event_id,
            attempts=F("attempts") + 1,
        )
    logger.warning("%s (%s): %s", subject, kind, detail)
    return problem


def problem_clear(*, subject: str) -> None:
    Problem.objects.filter(subject=subject).delete()
