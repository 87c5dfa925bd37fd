"""The numbers of a printable shift report: what the line made in a shift, a day or any time
range, read from the history (``db.report_html`` renders them).

Yield and counts (pass / reject / review, reject reasons), yield per hour, the defect Pareto,
the recipe versions in use, the top rejects with their archived images, and the alarms the
operators acknowledged (the history stores no alarms; acknowledgements are in the audit log).

Shifts come from the station's calendar (``station.shifts.ShiftPlan``, the station file's
``[shifts]``), and the one rule for which shift a moment is in, ``ShiftPlan.span_at``; the
report's local times are in the calendar's zone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from station.db.filters import FilterError, HistoryFilter
from station.db.models import AuditLogRow
from station.db.queries import HistoryQueries, ParetoEntry, YieldBucket
from station.shifts import ShiftPlan

TOP_CLASSES = 4  # top rejects are shown for the most frequent defect classes …
PER_CLASS = 3  # … this many parts each, the latest first
OTHER_REJECTS = 3  # and the latest rejects without a defect (timeouts, camera errors, …)


def shift_window(plan: ShiftPlan, name: str, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """UTC (start, end) of shift ``name`` starting on local date ``day``; FilterError if no such shift."""
    shift = next((s for s in plan.shifts if s.name == name), None)
    if shift is None:
        raise FilterError("shift", f"unknown shift {name!r} (known: {', '.join(s.name for s in plan.shifts)})")
    # the span holding the shift's start (span_at: DST-safe), else the next one (a start the clock skipped)
    span = plan.span_at(dt.datetime.combine(day, shift.start, plan.zone()))
    if (span.name, span.date) != (name, day):
        span = plan.span_at(span.end)
    return span.start, span.end


def day_window(day: dt.date, zone: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    """UTC (start, end) of local date ``day`` (23 or 25 hours on a clock-change day)."""
    start = dt.datetime.combine(day, dt.time(), zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone)
    return start.astimezone(dt.timezone.utc), end.astimezone(dt.timezone.utc)


def current_shift(plan: ShiftPlan, now: dt.datetime | None = None) -> tuple[str, dt.date] | None:
    """(shift name, local start date) of the shift running at ``now``, None between shifts."""
    span = plan.span_at(now or dt.datetime.now(dt.timezone.utc))
    return (span.name, span.date) if span.name is not None else None


@dataclass
class ShownReject:
    """A rejected part shown with its pictures: the row and its archived images (paths relative to the archive)."""

    inspection: dict[str, Any]
    images: list[dict[str, Any]]
    defect_class: str | None  # the Pareto class it is shown for; None for a reject without defects


@dataclass
class ShiftReport:
    title: str
    since: dt.datetime  # UTC
    until: dt.datetime  # UTC, exclusive
    zone: dt.tzinfo
    stations: list[str]
    filter: HistoryFilter
    total: int = 0
    passed: int = 0
    rejected: int = 0
    reviewed: int = 0
    reasons: list[tuple[str, str | None, int]] = field(default_factory=list)  # outcome, reject_reason, parts
    hours: list[YieldBucket] = field(default_factory=list)
    pareto: list[ParetoEntry] = field(default_factory=list)
    recipes: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[ShownReject] = field(default_factory=list)
    alarms: list[dict[str, Any]] = field(default_factory=list)  # at, actor, target (the alarm key)
    generated_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))

    @property
    def yield_pct(self) -> float:
        return 100.0 * self.passed / self.total if self.total else 0.0


def build_report(q: HistoryQueries, flt: HistoryFilter, zone: dt.tzinfo, title: str) -> ShiftReport:
    """The report of the inspections in ``flt`` (which must have ``since`` and ``until``)."""
    if flt.since is None or flt.until is None:
        raise FilterError("since", "a report needs a time range: a shift, a day, or since and until")
    q.check(flt)
    report = ShiftReport(title, flt.since, flt.until, zone, [], flt)
    report.reasons = q.outcome_counts(flt, check=False)
    for outcome, _, n in report.reasons:
        report.total += n
        if outcome == "pass":
            report.passed += n
        elif outcome == "review":
            report.reviewed += n
        else:
            report.rejected += n
    report.hours = q.yield_by_hour(flt, check=False)
    report.pareto = q.pareto(flt, check=False)
    report.recipes = q.recipe_versions_used(flt, check=False)
    report.stations = sorted({s for s in ([flt.station_id] if flt.station_id else q.stations())})
    report.rejects = _shown_rejects(q, flt, report.pareto)
    report.alarms = _acknowledged_alarms(q, flt)
    return report


def _shown_rejects(q: HistoryQueries, flt: HistoryFilter, pareto: list[ParetoEntry]) -> list[ShownReject]:
    shown: list[ShownReject] = []
    seen: set[int] = set()
    rejects = flt.model_copy(update={"verdict": "reject"})
    for entry in pareto[:TOP_CLASSES]:
        if flt.defect_class not in (None, entry.class_name):
            continue
        page = q.page(rejects.model_copy(update={"defect_class": entry.class_name}), limit=PER_CLASS * 4, check=False)
        taken = 0
        for row in page.items:
            if row["id"] in seen or taken == PER_CLASS:
                continue
            detail = q.inspection(row["id"])
            seen.add(row["id"])
            shown.append(ShownReject(row, detail.images if detail else [], entry.class_name))
            taken += 1
    if flt.defect_class is None:
        others = [r for r in q.page(rejects, limit=200, check=False).items if not r["defect_count"]][:OTHER_REJECTS]
        for row in others:
            detail = q.inspection(row["id"])
            shown.append(ShownReject(row, detail.images if detail else [], None))
    return shown


def _acknowledged_alarms(q: HistoryQueries, flt: HistoryFilter) -> list[dict[str, Any]]:
    a = AuditLogRow.__table__.c
    stmt = (select(a.at, a.actor, a.target).where(a.action == "alarm.acknowledge", a.at >= flt.since, a.at < flt.until)
            .order_by(a.at))
    with q.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def report_window(plan: ShiftPlan, *, shift: str | None = None, day: str | None = None,
                  since: dt.datetime | None = None, until: dt.datetime | None = None,
                  now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime, str]:
    """UTC (since, until) and a title for a report of: shift ``shift`` on local date ``day``
    (default: the date it last started), a whole local ``day``, the range since–until, or
    (nothing given) the shift running now. FilterError naming the field otherwise."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if (shift or day) and (since or until):
        raise FilterError("shift", "give a shift and/or a date, or since and until, not both")
    date = None
    if day:
        try:
            date = dt.date.fromisoformat(day)
        except ValueError:
            raise FilterError("date", f"{day!r} is not a date; use YYYY-MM-DD") from None
    if shift is None and date is None and since is None and until is None:
        running = current_shift(plan, now)
        if running is None:
            raise FilterError("shift", "no shift is running now: give a shift, a date, or since and until")
        shift, date = running
    if shift is not None:
        if date is None:
            date = now.astimezone(plan.zone()).date()
            if shift_window(plan, shift, date)[0] > now:
                date -= dt.timedelta(days=1)
        start, end = shift_window(plan, shift, date)
        return start, end, f"Shift report · {shift} shift of {date.isoformat()}"
    if date is not None:
        start, end = day_window(date, plan.zone())
        return start, end, f"Day report · {date.isoformat()}"
    if since is None or until is None:
        raise FilterError("since", "a report over a time range needs both since and until")
    return since, until, "Inspection report"
