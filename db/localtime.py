"""The station's time zone, for what people read: exports, reports, chart axes, shifts.

Stored times are UTC. People at the line read local time, so every place that shows or exports
a time converts it here. The station's zone is its shift calendar's (the station file's
``[shifts] timezone``), else the operating system's (``station.shifts.system_zone_name``).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

from station.shifts import system_zone_name


def station_zone(name: str | None = None) -> zoneinfo.ZoneInfo:
    """``name`` (an IANA zone, e.g. the station file's ``[shifts] timezone``) or the system's;
    ValueError naming an unknown zone."""
    name = name or system_zone_name()
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)") from None


def local_iso(t: dt.datetime | None, zone: dt.tzinfo) -> str:
    """ISO 8601 local time with its UTC offset, to the microsecond as stored (the same instant
    back when read): 2026-12-04T23:10:05.123456+01:00."""
    return t.astimezone(zone).isoformat(timespec="microseconds") if t else ""


def local_text(t: dt.datetime | None, zone: dt.tzinfo) -> str:
    """Local time as a spreadsheet reads a date and time by itself: 2026-12-04 23:10:05."""
    return t.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if t else ""
