"""Property tests of quota windows and billing cycles: pure functions of (period or
cadence, anchor, instant); and of what a billing cadence may be."""

import calendar
import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from billing_app.periods import (
    PERIODS,
    Cadence,
    Window,
    add_months,
    anchored_window,
    calendar_window,
    cycle_window,
    parse_cadence,
    validate_cadence,
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


# Anchors on month ends and around clock changes


@st.composite
def month_end_anchors(draw: st.DrawFn) -> datetime:
    """An anchor on the 28th to the last day of its month, at any time of day."""
    year, month = draw(st.integers(2000, 2090)), draw(st.integers(1, 12))
    day = draw(st.integers(28, calendar.monthrange(year, month)[1]))
    return datetime.combine(date(year, month, day), draw(st.times()), tzinfo=UTC)


DST_ZONES = ["America/New_York", "Europe/Paris", "Australia/Lord_Howe", "America/Santiago"]


@st.composite
def zoned_anchors(draw: st.DrawFn) -> datetime:
    """An anchor written in a zone with clock changes, near one of them (the weeks around
    the changes of March/April and September to November, north and south)."""
    zone = ZoneInfo(draw(st.sampled_from(DST_ZONES)))
    year, month = draw(st.integers(2000, 2090)), draw(st.sampled_from([3, 4, 9, 10, 11]))
    day = draw(st.integers(1, calendar.monthrange(year, month)[1]))
    local = datetime.combine(date(year, month, day), draw(st.times()))
    return local.replace(tzinfo=zone, fold=draw(st.integers(0, 1)))


awkward_anchors = st.one_of(month_end_anchors(), zoned_anchors())
cadence_texts = st.sampled_from(["P1M", "P3M", "P1Y", "P14D"])
# A quota period and the cadences that are whole multiples of it: their renewals fall on
# window boundaries.
ALIGNED = {"day": ["P14D"], "week": ["P14D"], "month": ["P1M", "P3M", "P1Y"], "year": ["P1Y"]}


def later(anchor: datetime, data: st.DataObject) -> datetime:
    """An instant from the anchor to about ten years after it."""
    return anchor.astimezone(UTC) + data.draw(
        st.timedeltas(timedelta(0), timedelta(days=3660)), label="after the anchor"
    )


@properties
@given(anchor=month_end_anchors(), data=st.data())
def test_month_end_anchors_never_drift(anchor, data):
    # Every window starts on the anchor's day, clamped to its month, however many short
    # months came before: Jan 31, Feb 28, Mar 31, not Mar 28.
    instant = later(anchor, data)
    for period, months in (("month", 1), ("year", 12)):
        w = anchored_window(period, anchor, instant)
        for edge in (w.start, w.end):
            assert edge.day == min(anchor.day, calendar.monthrange(edge.year, edge.month)[1])
            assert edge.time() == anchor.time()
        steps = (w.start.year - anchor.year) * 12 + w.start.month - anchor.month
        assert steps % months == 0
        assert w.start == add_months(anchor, steps)


@properties
@given(period=periods, anchor=awkward_anchors, data=st.data())
def test_windows_of_an_anchor_are_those_of_the_instant_it_is(period, anchor, data):
    # The anchor's time zone is how it was written, not when it was: the windows are
    # the same as from the same instant in UTC, and in UTC.
    instant = later(anchor, data)
    w = anchored_window(period, anchor, instant)
    assert w == anchored_window(period, anchor.astimezone(UTC), instant)
    assert w.start.utcoffset() == w.end.utcoffset() == timedelta(0)
    assert instant in w


@properties
@given(period=periods, cadence=cadence_texts, anchor=awkward_anchors, data=st.data())
def test_windows_never_move_across_a_renewal(period, cadence, anchor, data):
    instant = later(anchor, data)
    renewal = cycle_window(cadence, anchor, instant).end
    before = window_for(period, renewal - MICROSECOND, anchor=anchor)
    at = window_for(period, renewal, anchor=anchor)
    # A window running across the renewal goes on; only its own end starts another.
    assert at == before or (at.start == renewal == before.end)
    if before.end > renewal:
        assert at == before
        assert window_for(period, before.end - MICROSECOND, anchor=anchor) == before
    if cadence in ALIGNED[period]:
        assert at.start == renewal == before.end


@properties
@given(cadence=cadence_texts, anchor=awkward_anchors, data=st.data())
def test_quota_windows_and_cycles_of_the_same_length_coincide(cadence, anchor, data):
    period = {"P1M": "month", "P1Y": "year"}.get(cadence)
    assume(period is not None)
    instant = later(anchor, data)
    assert window_for(period, instant, anchor=anchor) == cycle_window(cadence, anchor, instant)


# Billing cycles: every cadence from the anchor


cadences = st.sampled_from(["P1D", "P7D", "P14D", "P2W", "P1M", "P3M", "P1Y", "P1Y2M", "P5Y"])
all_anchors = st.one_of(instants, awkward_anchors)


@properties
@given(cadence=cadences, anchor=all_anchors, data=st.data())
def test_every_instant_is_in_exactly_its_cycle(cadence, anchor, data):
    instant = data.draw(instants, label="instant")
    cycle = cycle_window(cadence, anchor, instant)
    assert cycle.start <= instant < cycle.end
    assert cycle.start.utcoffset() == cycle.end.utcoffset() == timedelta(0)
    assert cycle == cycle_window(cadence, anchor.astimezone(UTC), instant)
    # Cycles tile time: the next one starts where this one ends, the previous ends here.
    assert cycle_window(cadence, anchor, cycle.end).start == cycle.end
    assert cycle_window(cadence, anchor, cycle.start - MICROSECOND).end == cycle.start
    for other in (cycle.start, cycle.end - MICROSECOND, instant_in(data, cycle)):
        assert cycle_window(cadence, anchor, other) == cycle


@properties
@given(cadence=cadence_texts, anchor=awkward_anchors)
def test_cycles_walked_from_the_anchor_are_its_anniversaries(cadence, anchor):
    step = parse_cadence(cadence)
    start = anchor.astimezone(UTC)
    cycle = cycle_window(cadence, anchor, start)
    assert cycle.start == start
    for n in range(1, 25):
        cycle = cycle_window(cadence, anchor, cycle.end)
        assert cycle.start == step.nth(start, n)


@pytest.mark.parametrize("day", [29, 30, 31])
def test_monthly_cycles_anchored_late_in_the_month_come_back(day):
    anchor = datetime(2027, 1, day, tzinfo=UTC)
    february = cycle_window("P1M", anchor, datetime(2027, 2, 28, 12, tzinfo=UTC))
    march = cycle_window("P1M", anchor, datetime(2027, 3, 31, 12, tzinfo=UTC))
    assert february.start == datetime(2027, 2, 28, tzinfo=UTC)  # no Feb 29-31 in 2027
    assert february.end == march.start == datetime(2027, 3, day, tzinfo=UTC)


# Billing cadences: ISO 8601 durations of whole years, months, weeks and days


@given(
    years=st.integers(0, 5),
    months=st.integers(0, 60),
    weeks=st.integers(0, 260),
    days=st.integers(0, 1826),
    shown=st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_a_duration_of_one_day_to_five_years_is_a_cadence(years, months, weeks, days, shown):
    parts = [(years, "Y"), (months, "M"), (weeks, "W"), (days, "D")]
    text = "P" + "".join(
        f"{n}{unit}" for (n, unit), show in zip(parts, shown, strict=True) if n or show
    )
    total = (years * 12 + months) * 30.436875 + weeks * 7 + days
    assume(text != "P" and 1 <= total <= 5 * 365.25)
    assert parse_cadence(text) == Cadence(months=years * 12 + months, days=weeks * 7 + days)


STRICT_CADENCE = re.compile(r"P(?:[0-9]+Y)?(?:[0-9]+M)?(?:[0-9]+W)?(?:[0-9]+D)?", re.ASCII)
cadence_like = st.text(
    # Digits of other scripts, superscripts and fullwidth digits are digits to Python.
    alphabet=st.sampled_from(
        [*"PYMWDT0123456789.,-+ \n", "\u0661", "\u0663", "\u00b2", "\uff10", "p"]
    ),
    max_size=10,
)


@given(value=st.one_of(cadence_like, st.text(max_size=10)))
def test_only_iso_durations_of_whole_units_are_cadences(value):
    try:
        cadence = parse_cadence(value)
    except ValueError:
        return
    assert STRICT_CADENCE.fullmatch(value) and value != "P"
    assert 1 <= cadence.approximate_days <= 5 * 365.25


@pytest.mark.parametrize(
    "value",
    [
        "",
        "P",
        "P0D",
        "P0Y0M0W0D",
        "1M",
        "p1m",
        "P1m",
        "P-1M",
        "-P1M",
        "P1.5M",
        "P1,5M",
        "PT1H",
        "P1MT1H",
        "P1DT12H",
        "P1M1Y",
        "P1M ",
        " P1M",
        "P1M\n",
        "P\u0661M",  # ARABIC-INDIC DIGIT ONE
        "P\uff11M",  # FULLWIDTH DIGIT ONE
        "P6Y",
        "P61M",
        "P261W",
        "P1827D",
        "P00001M",
        None,
        1,
        30.0,
        b"P1M",
        ["P1M"],
    ],
)
def test_what_is_not_a_cadence_is_refused(value):
    with pytest.raises(ValueError):
        parse_cadence(value)
    with pytest.raises(ValidationError):
        validate_cadence(value)
