"""Quota windows and billing cycles: pure functions of (period, anchor, instant).

A window is a half-open interval ``[start, end)``. With an anchor (the start of the
subscription's Stripe period) windows are anniversaries of it: a monthly anchor on the 31st
gives windows starting Jan 31, Feb 28 (or 29), Mar 31, ... With no anchor, windows follow the
calendar in the given time zone (midnight, Monday, the 1st, January 1st).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import isodate

PERIODS = ("day", "week", "month", "year")
_MONTHS = {"month": 1, "year": 12}
_DAYS = {"day": 1, "week": 7}


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
    local = instant.astimezone(zone)
    day = local.date()
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

    def midnight(d):  # type: ignore[no-untyped-def]
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


def _cadence(cadence: str) -> tuple[int, timedelta]:
    """An ISO 8601 duration as (whole months, the rest)."""
    duration = isodate.parse_duration(cadence)
    if isinstance(duration, isodate.Duration):
        return int(duration.years) * 12 + int(duration.months), duration.tdelta
    return 0, duration


def cycle_window(cadence: str, anchor: datetime, instant: datetime) -> Window:
    """The billing cycle containing ``instant``: every ``cadence`` (ISO 8601: ``P1M``,
    ``P1Y``, ``P7D``) from ``anchor``, month ends clamped as anniversaries are."""
    months, rest = _cadence(cadence)

    def start(n: int) -> datetime:
        return add_months(anchor, months * n) + rest * n

    n = int((instant - anchor) / (timedelta(days=30.436875) * months + rest))
    while start(n) > instant:
        n -= 1
    while start(n + 1) <= instant:
        n += 1
    return Window(start(n), start(n + 1))


_LABELS = {"day": "%Y-%m-%d", "week": "%G-W%V", "month": "%Y-%m", "year": "%Y"}


def label(period: str, window: Window, tz: str = "UTC") -> str:
    """A short name of the window, from its start in ``tz``: ``2026-11`` for a month,
    ``2026-W47`` for a week, ``2026-11-21`` for a day, ``2026`` for a year."""
    _check(period)
    return window.start.astimezone(ZoneInfo(tz)).strftime(_LABELS[period])


def _check(period: str) -> None:
    if period not in PERIODS:
        raise ValueError(f"Unknown period {period!r}; expected one of {', '.join(PERIODS)}")
