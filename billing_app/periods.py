"""Quota windows and billing cadences: pure functions of (period, anchor, instant).

A window is a half-open interval ``[start, end)``. With an anchor (a subscription's billing
cycle anchor, which never moves) windows are anniversaries of it: a monthly anchor on the
31st gives windows starting Jan 31, Feb 28 (or 29), Mar 31, ... With no anchor, windows
follow the calendar in the given time zone (midnight, Monday, the 1st, January 1st).

A billing cadence is an ISO 8601 duration of whole years, months, weeks and days
(``P1M``, ``P3M``, ``P1Y``, ``P14D``), from one day to five years.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError

PERIODS = ("day", "week", "month", "year")
_MONTHS = {"month": 1, "year": 12}
_DAYS = {"day": 1, "week": 7}
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def __contains__(self, instant: datetime) -> bool:
        return self.start <= instant < self.end


def add_months(anchor: datetime, months: int) -> datetime:
    """``anchor`` moved by whole months, its day clamped to the target month's length."""
    index = anchor.year * 12 + anchor.month - 1 + months
    year, month = divmod(index, 12)
    day = min(anchor.day, calendar.monthrange(year, month + 1)[1])
    return anchor.replace(year=year, month=month + 1, day=day)


def _nth_start(period: str, anchor: datetime, n: int) -> datetime:
    if period in _DAYS:
        return anchor + timedelta(days=_DAYS[period] * n)
    return add_months(anchor, _MONTHS[period] * n)


def anchored_window(period: str, anchor: datetime, instant: datetime) -> Window:
    """The anniversary window of ``anchor`` that contains ``instant``."""
    _check(period)
    # Anniversaries of the instant the anchor is, counted in UTC as Stripe counts them:
    # wall-clock arithmetic in the zone it happens to be written in moves them by an hour
    # across a clock change.
    anchor = anchor.astimezone(UTC)
    if period in _DAYS:
        n = (instant - anchor) // timedelta(days=_DAYS[period])
    else:
        months = (instant.year - anchor.year) * 12 + instant.month - anchor.month
        n = months // _MONTHS[period]
        # The month arithmetic can overshoot by one window either way.
        while _nth_start(period, anchor, n) > instant:
            n -= 1
        while _nth_start(period, anchor, n + 1) <= instant:
            n += 1
    return Window(_nth_start(period, anchor, n), _nth_start(period, anchor, n + 1))


def calendar_window(period: str, instant: datetime, tz: str = "UTC") -> Window:
    """The calendar window containing ``instant``, cut at local midnight in ``tz``."""
    _check(period)
    zone = ZoneInfo(tz)
    day = instant.astimezone(zone).date()
    if period == "day":
        first, following = day, day + timedelta(days=1)
    elif period == "week":
        first = day - timedelta(days=day.weekday())
        following = first + timedelta(days=7)
    elif period == "month":
        first = day.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
    else:
        first = day.replace(month=1, day=1)
        following = first.replace(year=first.year + 1)

    def midnight(d: date) -> datetime:
        return datetime(d.year, d.month, d.day, tzinfo=zone).astimezone(UTC)

    return Window(midnight(first), midnight(following))


def window_for(
    period: str,
    instant: datetime,
    *,
    anchor: datetime | None = None,
    tz: str = "UTC",
    restart: datetime | None = None,
) -> Window:
    """The quota window containing ``instant``. A ``restart`` inside a window (a plan
    change that resets usage) splits it in two there."""
    if anchor is not None:
        window = anchored_window(period, anchor, instant)
    else:
        window = calendar_window(period, instant, tz)
    if restart is not None and window.start < restart < window.end:
        return Window(restart, window.end) if instant >= restart else Window(window.start, restart)
    return window


def minute_window(instant: datetime) -> Window:
    """The clock minute containing ``instant``: the window of per-minute rate limits."""
    start = instant.replace(second=0, microsecond=0)
    return Window(start, start + MINUTE)


# Billing cadences


@dataclass(frozen=True)
class Cadence:
    months: int
    days: int

    def nth(self, anchor: datetime, n: int) -> datetime:
        """The start of the ``n``-th cycle from ``anchor``, month ends clamped as
        anniversaries are (Jan 31 + 1 month is Feb 28, + 2 months is Mar 31)."""
        return add_months(anchor, self.months * n) + timedelta(days=self.days * n)

    @property
    def approximate_days(self) -> float:
        return self.months * 30.436875 + self.days


# ASCII: to Python, digits of other scripts are digits too (int("\u0661") == 1).
_CADENCE = re.compile(r"P(?:(\d{1,4})Y)?(?:(\d{1,4})M)?(?:(\d{1,4})W)?(?:(\d{1,5})D)?", re.ASCII)
MAX_CADENCE_DAYS = 5 * 365.25


def parse_cadence(value: object) -> Cadence:
    """``P1M`` -> Cadence(months=1, days=0). Raises ``ValueError`` with the reason."""
    match = _CADENCE.fullmatch(value) if isinstance(value, str) else None
    if match is None or value == "P":
        raise ValueError(
            f"{value!r} is not a billing cadence: an ISO 8601 duration of whole years, "
            "months, weeks or days such as P1M, P3M, P1Y or P14D."
        )
    years, months, weeks, days = (int(part or 0) for part in match.groups())
    cadence = Cadence(years * 12 + months, weeks * 7 + days)
    if cadence.approximate_days < 1:
        raise ValueError("A billing cadence is at least one day.")
    if cadence.approximate_days > MAX_CADENCE_DAYS:
        raise ValueError("A billing cadence is at most five years.")
    return cadence


def validate_cadence(value: object) -> None:
    """The model validator of ``Plan.billing_cadence``."""
    try:
        parse_cadence(value)
    except ValueError as error:
        raise ValidationError(str(error)) from None


def cycle_window(cadence: str | Cadence, anchor: datetime, instant: datetime) -> Window:
    """The billing cycle containing ``instant``: every ``cadence`` from ``anchor``."""
    step = parse_cadence(cadence) if isinstance(cadence, str) else cadence
    anchor = anchor.astimezone(UTC)  # as anchored_window counts
    n = int((instant - anchor) / timedelta(days=step.approximate_days))
    while step.nth(anchor, n) > instant:
        n -= 1
    while step.nth(anchor, n + 1) <= instant:
        n += 1
    return Window(step.nth(anchor, n), step.nth(anchor, n + 1))


def interval_name(cadence: str) -> str | None:
    """The deprecated ``billingInterval`` of a cadence: monthly, quarterly, yearly."""
    step = parse_cadence(cadence)
    names = {(1, 0): "monthly", (3, 0): "quarterly", (12, 0): "yearly"}
    return names.get((step.months, step.days))


_LABELS = {"day": "%Y-%m-%d", "week": "%G-W%V", "month": "%Y-%m", "year": "%Y"}


def label(period: str, window: Window, tz: str = "UTC") -> str:
    """A short name of the window, from its start in ``tz``: ``2026-11`` for a month,
    ``2026-W47`` for a week, ``2026-11-21`` for a day, ``2026`` for a year."""
    _check(period)
    return window.start.astimezone(ZoneInfo(tz)).strftime(_LABELS[period])


def _check(period: str) -> None:
    if period not in PERIODS:
        raise ValueError(f"Unknown period {period!r}; expected one of {', '.join(PERIODS)}")
