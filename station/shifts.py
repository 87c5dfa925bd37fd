"""The plant's shift calendar, and the one rule for which shift a moment belongs to.

Shifts are given by local wall-clock times (``start``, ``end``; ``end`` <= ``start`` runs past
midnight) in one time zone. ``ShiftPlan.span_at`` turns a moment into the shift instance that
holds it: the shift's name, the local date it started on, and its start and end as moments.
It works on moments, not on clock readings, so a night shift across a DST change lasts 7 or 9
hours and every moment belongs to exactly one span. A time the clock skips (a start at 02:30
on the night clocks go forward) starts the shift when the clock jumps; a time the clock shows
twice (the night they go back) is taken at its first showing. Moments between two shifts
(a plan with gaps) belong to an unnamed span from the end of one shift to the start of the next.

Used by the operator's counters (station.counters) and the history's yield per shift
(station.db.queries); the station file's ``[shifts]`` (station.config) makes the plan.
"""

from __future__ import annotations

import datetime as dt
import os
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

UTC = dt.timezone.utc
MINUTES_PER_DAY = 24 * 60


def system_zone_name() -> str:
    """The IANA name of this machine's time zone (TZ, else /etc/localtime), "UTC" if unknown."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        return tz
    try:
        return str(Path("/etc/localtime").resolve()).split("zoneinfo/", 1)[1]
    except (IndexError, OSError):
        return "UTC"


@dataclass(frozen=True)
class Shift:
    """A shift by local wall-clock time; ``end`` <= ``start`` means it runs past midnight."""

    name: str
    start: dt.time
    end: dt.time


@dataclass(frozen=True)
class ShiftSpan:
    """One instance of a shift (``name``), or the time between two shifts (``name`` None)."""

    name: str | None
    date: dt.date  # local date the span started on
    start: dt.datetime  # aware, UTC
    end: dt.datetime  # aware, UTC (exclusive)


@dataclass(frozen=True)
class ShiftPlan:
    shifts: tuple[Shift, ...]
    timezone: str = "UTC"  # IANA name, e.g. Europe/Berlin

    def __post_init__(self) -> None:
        check_shifts(self.shifts)
        self.zone()

    @classmethod
    def three_shifts(cls, timezone: str = "UTC") -> ShiftPlan:
        """early 06–14, late 14–22, night 22–06: the station's default calendar."""
        return cls(
            (
                Shift("early", dt.time(6), dt.time(14)),
                Shift("late", dt.time(14), dt.time(22)),
                Shift("night", dt.time(22), dt.time(6)),
            ),
            timezone,
        )

    def zone(self) -> zoneinfo.ZoneInfo:
        """The plan's time zone; ValueError naming it if it is unknown."""
        try:
            return zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None

    def span_at(self, when: dt.datetime) -> ShiftSpan:
        """The shift instance (or the gap between shifts) holding the aware moment ``when``."""
        if when.tzinfo is None:
            raise ValueError("span_at needs an aware datetime")
        tz = self.zone()
        when = when.astimezone(UTC)
        today = when.astimezone(tz).date()
        # every boundary from two days back to one ahead: a shift starts at most a day before it ends
        starts, ends = [], []
        for offset in (-2, -1, 0, 1):
            day = today + dt.timedelta(days=offset)
            for s in self.shifts:
                end_day = day + dt.timedelta(days=1) if s.end <= s.start else day
                starts.append((_moment(day, s.start, tz), s, day))
                ends.append((_moment(end_day, s.end, tz), s))
        started = max(((t, s, day) for t, s, day in starts if t <= when), key=lambda e: e[0])
        t0, shift, day = started
        t1 = next(t for t, s in ends if s is shift and t > t0)
        if when < t1:
            return ShiftSpan(shift.name, day, t0, t1)
        # between shifts: from the last end to the next start
        gap_start = max(t for t, _ in ends if t <= when)
        gap_end = min(t for t, _, _ in starts if t > when)
        return ShiftSpan(None, gap_start.astimezone(tz).date(), gap_start, gap_end)


def check_shifts(shifts: tuple[Shift, ...]) -> None:
    """ValueError naming the problem: no shift, a repeated name, or two shifts that overlap."""
    if not shifts:
        raise ValueError("at least one shift is needed")
    names = [s.name for s in shifts]
    if len(set(names)) != len(names):
        raise ValueError(f"shift names repeat: {names}")
    owner: dict[int, str] = {}
    for s in shifts:
        if not s.name.strip():
            raise ValueError("a shift needs a name")
        first = s.start.hour * 60 + s.start.minute
        length = (s.end.hour * 60 + s.end.minute - first) % MINUTES_PER_DAY or MINUTES_PER_DAY
        for m in range(first, first + length):
            other = owner.setdefault(m % MINUTES_PER_DAY, s.name)
            if other != s.name:
                raise ValueError(f"shifts {other!r} and {s.name!r} overlap at {m // 60 % 24:02d}:{m % 60:02d}")


def _moment(day: dt.date, t: dt.time, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """The first moment (UTC) at which the clock in ``tz`` reads ``t`` or later on ``day``."""
    local = dt.datetime.combine(day, t, tzinfo=tz)  # fold 0: the first showing of a repeated time
    moment = local.astimezone(UTC)
    if moment.astimezone(tz).replace(tzinfo=None) == local.replace(tzinfo=None):
        return moment
    # the clock skips ``t`` (DST starts): the shift starts when it jumps, somewhere between the
    # two readings of the skipped time (offset changes fall on whole seconds)
    lo, hi = sorted(int(x.timestamp()) for x in (local.replace(fold=1).astimezone(UTC), moment))
    naive = local.replace(tzinfo=None)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return dt.datetime.fromtimestamp(hi, UTC)
