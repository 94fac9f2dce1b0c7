"""Property tests of the quota windows: pure functions of (period, anchor, instant)."""

import calendar
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from billing_app.periods import (
    PERIODS,
    Window,
    add_months,
    anchored_window,
    calendar_window,
    window_for,
)

MICROSECOND = timedelta(microseconds=1)

instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 12, 31), timezones=st.just(UTC)
)
periods = st.sampled_from(PERIODS)
anchors = st.one_of(st.none(), instants)
# New York and Paris change clocks at night, Lord Howe by half an hour; Santiago and Havana
# at midnight itself, so some of their days have no 00:00.
zones = st.sampled_from(
    [
        "UTC",
        "America/New_York",
        "Europe/Paris",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
        "America/Santiago",
        "America/Havana",
    ]
)
properties = settings(max_examples=300, deadline=None)


def window(period: str, instant: datetime, anchor: datetime | None, tz: str = "UTC") -> Window:
    return window_for(period, instant, anchor=anchor, tz=tz)


def instant_in(data: st.DataObject, w: Window) -> datetime:
    span = (w.end - w.start) // MICROSECOND
    return w.start + data.draw(st.integers(0, span - 1)) * MICROSECOND


# Every instant falls in exactly one window


@properties
@given(period=periods, instant=instants, anchor=anchors, tz=zones)
def test_the_window_of_an_instant_contains_it(period, instant, anchor, tz):
    w = window(period, instant, anchor, tz)
    assert w.start < w.end
    assert w.start <= instant < w.end
    assert instant in w


@properties
@given(period=periods, instant=instants, anchor=anchors, tz=zones, data=st.data())
def test_every_instant_of_a_window_has_that_window(period, instant, anchor, tz, data):
    w = window(period, instant, anchor, tz)
    for other in (w.start, w.end - MICROSECOND, instant_in(data, w)):
        assert window(period, other, anchor, tz) == w


@properties
@given(period=periods, instant=instants, anchor=anchors, tz=zones)
def test_windows_tile_time(period, instant, anchor, tz):
    w = window(period, instant, anchor, tz)
    assert window(period, w.end, anchor, tz).start == w.end
    assert window(period, w.start - MICROSECOND, anchor, tz).end == w.start
    assert w.end not in w
    assert w.start - MICROSECOND not in w


@properties
@given(period=periods, instant=instants, anchor=anchors, tz=zones)
def test_windows_are_utc(period, instant, anchor, tz):
    w = window(period, instant, anchor, tz)
    assert w.start.utcoffset() == w.end.utcoffset() == timedelta(0)


# Anchored windows: anniversaries of the anchor


@properties
@given(period=st.sampled_from(["day", "week"]), instant=instants, anchor=instants)
def test_anchored_days_and_weeks_are_whole_multiples_of_the_anchor(period, instant, anchor):
    length = timedelta(days=1 if period == "day" else 7)
    w = anchored_window(period, anchor, instant)
    assert w.end - w.start == length
    assert (w.start - anchor) % length == timedelta(0)


@properties
@given(period=st.sampled_from(["month", "year"]), instant=instants, anchor=instants)
def test_anchored_months_and_years_start_on_the_anchor_day_clamped(period, instant, anchor):
    w = anchored_window(period, anchor, instant)
    for edge in (w.start, w.end):
        last_day = calendar.monthrange(edge.year, edge.month)[1]
        assert edge.day == min(anchor.day, last_day)
        assert edge.time() == anchor.time()
        if period == "year":
            assert edge.month == anchor.month
    months = (w.end.year - w.start.year) * 12 + w.end.month - w.start.month
    assert months == (1 if period == "month" else 12)


@properties
@given(period=periods, anchor=instants, before=st.timedeltas(MICROSECOND, timedelta(days=3650)))
def test_instants_before_the_anchor(period, anchor, before):
    instant = anchor - before
    assume(instant.year >= 2000)
    w = anchored_window(period, anchor, instant)
    assert instant in w
    assert w.end <= anchor
    # Walking forward window by window reaches the anchor exactly.
    while w.end < anchor:
        w = anchored_window(period, anchor, w.end)
    assert w.end == anchor


@given(period=periods, anchor=instants)
def test_the_anchor_starts_a_window(period, anchor):
    assert anchored_window(period, anchor, anchor).start == anchor


def starts(period: str, anchor: datetime, count: int) -> list[datetime]:
    """The first ``count`` window starts from ``anchor``, found by walking window to window."""
    result, instant = [], anchor
    for _ in range(count):
        w = anchored_window(period, anchor, instant)
        result.append(w.start)
        instant = w.end
    return result


@pytest.mark.parametrize(
    ("anchor", "expected_days"),
    [
        (date(2023, 1, 31), [(1, 31), (2, 28), (3, 31), (4, 30), (5, 31), (6, 30)]),
        (date(2024, 1, 31), [(1, 31), (2, 29), (3, 31), (4, 30), (5, 31), (6, 30)]),
        (date(2023, 1, 30), [(1, 30), (2, 28), (3, 30), (4, 30), (5, 30), (6, 30)]),
        (date(2024, 1, 29), [(1, 29), (2, 29), (3, 29), (4, 29), (5, 29), (6, 29)]),
        (date(2023, 1, 29), [(1, 29), (2, 28), (3, 29), (4, 29), (5, 29), (6, 29)]),
        (date(2023, 12, 31), [(12, 31), (1, 31), (2, 29), (3, 31), (4, 30), (5, 31)]),
    ],
)
def test_monthly_anchor_on_the_29th_to_31st(anchor, expected_days):
    at = datetime.combine(anchor, time(13, 45), tzinfo=UTC)
    found = starts("month", at, len(expected_days))
    assert [(s.month, s.day) for s in found] == expected_days
    assert all(s.time() == time(13, 45) for s in found)


def test_yearly_anchor_on_february_29th():
    at = datetime(2024, 2, 29, 6, tzinfo=UTC)
    found = starts("year", at, 5)
    assert [s.date() for s in found] == [
        date(2024, 2, 29),
        date(2025, 2, 28),
        date(2026, 2, 28),
        date(2027, 2, 28),
        date(2028, 2, 29),
    ]


def test_an_instant_on_the_clamped_day_is_in_the_short_window():
    anchor = datetime(2023, 1, 31, tzinfo=UTC)
    w = anchored_window("month", anchor, datetime(2023, 3, 15, tzinfo=UTC))
    assert w == Window(datetime(2023, 2, 28, tzinfo=UTC), datetime(2023, 3, 31, tzinfo=UTC))
    before = anchored_window("month", anchor, datetime(2022, 12, 31, tzinfo=UTC))
    assert before == Window(datetime(2022, 12, 31, tzinfo=UTC), anchor)


@pytest.mark.parametrize(
    ("anchor", "months", "expected"),
    [
        (datetime(2023, 1, 31, tzinfo=UTC), 1, datetime(2023, 2, 28, tzinfo=UTC)),
        (datetime(2024, 1, 31, tzinfo=UTC), 1, datetime(2024, 2, 29, tzinfo=UTC)),
        (datetime(2023, 1, 31, tzinfo=UTC), 2, datetime(2023, 3, 31, tzinfo=UTC)),
        (datetime(2023, 3, 31, tzinfo=UTC), -1, datetime(2023, 2, 28, tzinfo=UTC)),
        (datetime(2023, 1, 15, tzinfo=UTC), -13, datetime(2021, 12, 15, tzinfo=UTC)),
        (datetime(2023, 12, 31, tzinfo=UTC), 12, datetime(2024, 12, 31, tzinfo=UTC)),
    ],
)
def test_add_months_clamps_the_day(anchor, months, expected):
    assert add_months(anchor, months) == expected


# Calendar windows, cut in a time zone


def first_local_day(period: str, day: date) -> date:
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


@properties
@given(period=periods, instant=instants, tz=zones)
def test_calendar_windows_start_at_the_first_instant_of_their_local_day(period, instant, tz):
    zone = ZoneInfo(tz)
    w = calendar_window(period, instant, tz)
    first = first_local_day(period, instant.astimezone(zone).date())
    assert w.start.astimezone(zone).date() == first
    assert (w.start - MICROSECOND).astimezone(zone).date() < first


@properties
@given(
    period=periods,
    instant=instants,
    tz=st.sampled_from(["UTC", "America/New_York", "Europe/Paris", "Australia/Lord_Howe"]),
)
def test_calendar_windows_start_at_local_midnight(period, instant, tz):
    zone = ZoneInfo(tz)
    w = calendar_window(period, instant, tz)
    for edge in (w.start, w.end):
        local = edge.astimezone(zone)
        assert local.time() == time(0)
        assert local.date() == first_local_day(period, local.date())


@properties
@given(instant=instants, tz=zones)
def test_calendar_weeks_start_on_monday(instant, tz):
    zone = ZoneInfo(tz)
    w = calendar_window("week", instant, tz)
    assert w.start.astimezone(zone).weekday() == 0
    assert w.end.astimezone(zone).date() - w.start.astimezone(zone).date() == timedelta(days=7)


@pytest.mark.parametrize(
    ("local_noon", "start", "end", "hours"),
    [
        # Spring forward: a 23-hour day.
        (datetime(2024, 3, 10, 12), datetime(2024, 3, 10, 5), datetime(2024, 3, 11, 4), 23),
        # Fall back: a 25-hour day.
        (datetime(2024, 11, 3, 12), datetime(2024, 11, 3, 4), datetime(2024, 11, 4, 5), 25),
        (datetime(2024, 7, 1, 12), datetime(2024, 7, 1, 4), datetime(2024, 7, 2, 4), 24),
    ],
)
def test_new_york_days_across_daylight_saving_changes(local_noon, start, end, hours):
    ny = ZoneInfo("America/New_York")
    w = calendar_window("day", local_noon.replace(tzinfo=ny), "America/New_York")
    assert w == Window(start.replace(tzinfo=UTC), end.replace(tzinfo=UTC))
    assert w.end - w.start == timedelta(hours=hours)


def test_new_york_month_spanning_a_clock_change():
    w = calendar_window("month", datetime(2024, 3, 20, tzinfo=UTC), "America/New_York")
    # March starts on EST (UTC-5) and April on EDT (UTC-4).
    assert w == Window(datetime(2024, 3, 1, 5, tzinfo=UTC), datetime(2024, 4, 1, 4, tzinfo=UTC))


def test_calendar_window_uses_the_local_date_not_the_utc_date():
    # 02:00 UTC on the 1st is still the previous evening in New York.
    w = calendar_window("month", datetime(2024, 6, 1, 2, tzinfo=UTC), "America/New_York")
    assert w.start == datetime(2024, 5, 1, 4, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("day", datetime(2024, 2, 29), datetime(2024, 3, 1)),
        ("week", datetime(2024, 2, 26), datetime(2024, 3, 4)),
        ("month", datetime(2024, 2, 1), datetime(2024, 3, 1)),
        ("year", datetime(2024, 1, 1), datetime(2025, 1, 1)),
    ],
)
def test_calendar_windows_in_utc(period, start, end):
    w = window_for(period, datetime(2024, 2, 29, 15, 30, tzinfo=UTC))
    assert w == Window(start.replace(tzinfo=UTC), end.replace(tzinfo=UTC))


def test_window_for_uses_the_anchor_when_given():
    instant = datetime(2024, 2, 29, 15, 30, tzinfo=UTC)
    anchor = datetime(2024, 1, 10, 8, tzinfo=UTC)
    assert window_for("month", instant, anchor=anchor) == Window(
        datetime(2024, 2, 10, 8, tzinfo=UTC), datetime(2024, 3, 10, 8, tzinfo=UTC)
    )


@pytest.mark.parametrize("anchor", [None, datetime(2023, 5, 17, tzinfo=UTC)])
def test_an_unknown_period_is_refused(anchor):
    with pytest.raises(ValueError, match="fortnight"):
        window_for("fortnight", datetime(2024, 1, 1, tzinfo=UTC), anchor=anchor)
