"""The shift calendar (station.shifts, the station file's [shifts]): which shift a moment is in,
across midnight and DST changes, and the calendar's validation at load."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from station.config import load_station_config
from station.config_errors import ConfigError
from station.shifts import Shift, ShiftPlan

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
UTC = dt.timezone.utc


def berlin(*args, fold: int = 0) -> dt.datetime:
    return dt.datetime(*args, tzinfo=BERLIN, fold=fold)


@pytest.mark.parametrize("zone,first", [("Europe/Berlin", dt.datetime(2026, 3, 27, tzinfo=UTC)),
                                        ("Europe/Berlin", dt.datetime(2026, 10, 23, tzinfo=UTC)),
                                        ("America/New_York", dt.datetime(2026, 3, 6, tzinfo=UTC)),
                                        ("Asia/Kolkata", dt.datetime(2026, 3, 6, tzinfo=UTC))])
def test_every_moment_is_in_exactly_one_span_and_spans_tile_time(zone, first):
    """Four days around a DST change, every 7 minutes: the span holding a moment holds it, and
    walking span to span (end = next start) meets no gap and no overlap."""
    plan = ShiftPlan((Shift("A", dt.time(6), dt.time(14, 30)), Shift("B", dt.time(14, 30), dt.time(21)),
                      Shift("N", dt.time(22), dt.time(2, 30))), zone)  # a gap 21:00-22:00, 02:30-06:00
    t = first
    while t < first + dt.timedelta(days=4):
        span = plan.span_at(t)
        assert span.start <= t < span.end
        t += dt.timedelta(minutes=7)
    span = plan.span_at(first)
    names = []
    while span.start < first + dt.timedelta(days=4):
        after = plan.span_at(span.end)
        assert after.start == span.end and after != span
        names.append(span.name)
        span = after
    start = names.index("A")
    assert names[start:start + 10] == ["A", "B", None, "N", None] * 2  # the same rhythm every day


def test_shift_times_the_clock_skips_or_shows_twice():
    plan = ShiftPlan((Shift("early", dt.time(2, 30), dt.time(12)), Shift("late", dt.time(12), dt.time(2, 30))), "Europe/Berlin")
    # 29 Mar 2026: 02:00 CET jumps to 03:00 CEST, 02:30 never shows: "early" starts at the jump
    span = plan.span_at(berlin(2026, 3, 29, 3, 10))
    assert span.name == "early" and span.start == berlin(2026, 3, 29, 3) and span.start == dt.datetime(2026, 3, 29, 1, tzinfo=UTC)
    assert plan.span_at(berlin(2026, 3, 29, 1, 59)).name == "late"
    # 25 Oct 2026: 02:30 shows twice; the shift starts at the first 02:30 (CEST)
    span = plan.span_at(berlin(2026, 10, 25, 2, 45, fold=1))  # the second 02:45 (CET)
    assert span.name == "early" and span.start == dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert span.end - span.start == dt.timedelta(hours=10, minutes=30)  # 02:30 CEST to 12:00 CET


def test_the_night_shift_belongs_to_the_date_it_started():
    plan = ShiftPlan.three_shifts("Europe/Berlin")
    for when in (berlin(2026, 12, 31, 22), berlin(2027, 1, 1, 0, 0), berlin(2027, 1, 1, 5, 59, 59)):
        span = plan.span_at(when)
        assert (span.name, span.date, span.start, span.end) == ("night", dt.date(2026, 12, 31), berlin(2026, 12, 31, 22),
                                                                berlin(2027, 1, 1, 6))
    assert plan.span_at(berlin(2027, 1, 1, 6)).name == "early"
    with pytest.raises(ValueError, match="aware"):
        plan.span_at(dt.datetime(2027, 1, 1, 6))


def write_station(tmp_path, shifts: str):
    path = tmp_path / "station.toml"
    path.write_text('active_recipe = "demo-part"\n[[cameras]]\ntype = "simulated"\n' + shifts)
    return path


def test_the_station_file_calendar_each_shift_until_the_next_by_default(tmp_path):
    config = load_station_config(write_station(tmp_path, """
[shifts]
timezone = "America/Chicago"
[[shifts.calendar]]
name = "B"
start = "15:00"
[[shifts.calendar]]
name = "A"
start = 07:00:00
end = "15:00"
"""))
    plan = config.shifts.plan()
    assert plan.timezone == "America/Chicago"
    assert plan.shifts == (Shift("A", dt.time(7), dt.time(15)), Shift("B", dt.time(15), dt.time(7)))
    default = load_station_config(write_station(tmp_path, "")).shifts.plan()
    assert [(s.name, s.start, s.end) for s in default.shifts] == [
        ("early", dt.time(6), dt.time(14)), ("late", dt.time(14), dt.time(22)), ("night", dt.time(22), dt.time(6))]


@pytest.mark.parametrize("shifts,reason", [
    ('[shifts]\ntimezone = "Europe/Atlantis"\n', "unknown time zone 'Europe/Atlantis'"),
    ('[[shifts.calendar]]\nname = "A"\nstart = "06:00"\n[[shifts.calendar]]\nname = "A"\nstart = "18:00"\n', "names repeat"),
    ('[[shifts.calendar]]\nname = "A"\nstart = "06:00"\nend = "15:00"\n[[shifts.calendar]]\nname = "B"\nstart = "14:00"\n',
     "'A' and 'B' overlap at 14:00"),
    ('[[shifts.calendar]]\nname = "A"\nstart = "06:00"\n[[shifts.calendar]]\nname = "B"\nstart = "06:00"\n', "same time"),
    ('[[shifts.calendar]]\nname = "A"\nstart = "6 o\'clock"\n', "time"),
    ('[shifts]\ncalendar = []\n', "at least 1"),
    ('[[shifts.calendar]]\nname = "A"\nbegin = "06:00"\nstart = "06:00"\n', "begin"),
])
def test_a_bad_calendar_is_refused_at_load_naming_the_key(tmp_path, shifts, reason):
    with pytest.raises(ConfigError) as err:
        load_station_config(write_station(tmp_path, shifts))
    text = str(err.value)
    assert "shifts" in text and reason in text, text
