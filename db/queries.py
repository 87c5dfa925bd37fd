"""Read side of the history, for the HMI and the CLI: lists, details, yield, Pareto, export.

All methods take a validated ``HistoryFilter`` (``db.filters``); values reach SQL only as
bound parameters. A recipe, defect class or station the history has never seen is a
``FilterError`` (so a typo is not mistaken for "no rejects"). Times are UTC-aware datetimes.
Lists are newest first (``triggered_at`` then ``id`` descending).

    q = HistoryQueries(make_engine(url))
    page = q.page(HistoryFilter.parse(verdict="reject", since="2026-11-24T06:00"), limit=50)
    for row in page.items: ...
    q.page(flt, limit=50, cursor=page.next_cursor)  # keyset paging: fast at any depth
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, case, exists, func, select, tuple_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from station.db.filters import FilterError, HistoryFilter
from station.shifts import Shift, ShiftPlan  # noqa: F401 (Shift: re-exported, see __all__)
from station.db.models import DefectRow, ImageRow, InspectionRow, RecipeVersionRow, ReviewRow

I = InspectionRow.__table__.c  # noqa: E741 (I and D: the two tables' columns, as in SQL)
D = DefectRow.__table__.c

# Inspection columns in list/export order (JSON columns are dicts).
SUMMARY_COLUMNS = (
    "id", "station_id", "sequence", "part_id", "triggered_at", "recipe_name", "recipe_version",
    "outcome", "reason", "reject_reason", "plc_code", "top_class", "defect_count",
)
EXPORT_COLUMNS = SUMMARY_COLUMNS + (
    "cameras", "recipe_hash", "model_hashes", "scores", "thresholds", "timings_ms", "error", "images_dropped",
)
DEFECT_COLUMNS = (
    "id", "view", "class_name", "confidence", "x0", "y0", "x1", "y1", "area_px", "area_mm2",
    "proposal_score", "zone", "mask_rle",
)


# ---- dialect-neutral time buckets ---------------------------------------------------------
class time_bucket(FunctionElement):
    """A UTC timestamp column truncated to the hour or the minute.

    SQLite: the stored text cut to 'YYYY-MM-DD HH[:MI]' (no date parsing per row: several times
    faster than strftime on a million rows). PostgreSQL: date_trunc, a timestamp."""

    inherit_cache = True
    unit = ""


class hour_bucket(time_bucket):
    inherit_cache = True
    unit = "hour"


class minute_bucket(time_bucket):
    inherit_cache = True
    unit = "minute"


_BUCKET_CHARS = {"hour": 13, "minute": 16}
_BUCKETS = {"hour": hour_bucket, "minute": minute_bucket}


@compiles(time_bucket, "sqlite")
def _bucket_sqlite(element, compiler, **kw):
    return f"substr({compiler.process(element.clauses, **kw)}, 1, {_BUCKET_CHARS[element.unit]})"


@compiles(time_bucket, "postgresql")
def _bucket_pg(element, compiler, **kw):
    # date_trunc returns a timestamp (cheaper than formatting text per row)
    return f"date_trunc('{element.unit}', {compiler.process(element.clauses, **kw)})"


def _bucket_start(value: str | dt.datetime) -> dt.datetime:
    if isinstance(value, str):  # SQLite: fromisoformat reads 'YYYY-MM-DD HH[:MM]', 10x faster than strptime
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.timezone.utc)


# ---- results --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cursor:
    """Position after the last row of a page (keyset paging)."""

    triggered_at: dt.datetime
    id: int


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]  # SUMMARY_COLUMNS
    limit: int
    offset: int
    has_more: bool
    next_cursor: Cursor | None


@dataclass(frozen=True)
class YieldBucket:
    start: dt.datetime  # UTC, start of the hour
    total: int
    passed: int
    rejected: int
    reviewed: int = 0  # REVIEW verdicts, apart from the rejects

    @property
    def yield_pct(self) -> float:
        return 100.0 * self.passed / self.total if self.total else 0.0

    def local_start(self, zone: dt.tzinfo, fmt: str = "%Y-%m-%d %H:%M") -> str:
        """The bucket's start on ``zone``'s clock, minutes included: a UTC hour starts at :30 or
        :45 in some zones (India, Nepal), and labelling it "HH:00" would shift it."""
        return self.start.astimezone(zone).strftime(fmt)


@dataclass(frozen=True)
class ShiftYield:
    shift: str
    date: dt.date  # local date the shift started
    total: int
    passed: int
    rejected: int
    reviewed: int = 0  # REVIEW verdicts, apart from the rejects

    @property
    def yield_pct(self) -> float:
        return 100.0 * self.passed / self.total if self.total else 0.0


@dataclass(frozen=True)
class ParetoEntry:
    class_name: str
    count: int
    share: float  # of all defects in the filter, 0..1
    cumulative: float  # running share, 0..1


@dataclass
class InspectionDetail:
    inspection: dict[str, Any]  # EXPORT_COLUMNS
    defects: list[dict[str, Any]] = field(default_factory=list)  # DEFECT_COLUMNS
    images: list[dict[str, Any]] = field(default_factory=list)  # view, kind, path, sha256, bytes
    reviews: list[dict[str, Any]] = field(default_factory=list)


# ---- queries --------------------------------------------------------------------------------
class HistoryQueries:
    """Read-only queries on one engine. Thread-safe (one short connection per call)."""

    MAX_LIMIT = 10_000

    def __init__(self, engine: Engine):
        self.engine = engine
        # PostgreSQL turns "id IN (subquery)" into a nested-loop semi join that probes every
        # recent inspection; an OFFSET keeps the subquery separate and hashed (10x faster on 1M rows)
        self._fence = engine.dialect.name == "postgresql"

    # -- what exists
    def recipes(self) -> list[str]:
        """Recipe names known from stored recipe versions and inspections."""
        with self.engine.connect() as conn:
            names = set(conn.scalars(select(RecipeVersionRow.name).distinct()))
            names |= set(_distinct(conn, I.recipe_name))
        return sorted(names)

    def defect_classes(self) -> list[str]:
        with self.engine.connect() as conn:
            return _distinct(conn, D.class_name)

    def stations(self) -> list[str]:
        with self.engine.connect() as conn:
            return _distinct(conn, I.station_id)

    def check(self, flt: HistoryFilter) -> None:
        """Raise FilterError if the filter names a recipe, class or station never seen (index lookups)."""
        with self.engine.connect() as conn:
            if flt.recipe is not None:
                seen = conn.scalar(select(exists().where(I.recipe_name == flt.recipe))) or conn.scalar(
                    select(exists().where(RecipeVersionRow.name == flt.recipe))
                )
                if not seen:
                    raise FilterError("recipe", f"unknown recipe {flt.recipe!r} (known: {', '.join(self.recipes()) or 'none'})")
            if flt.defect_class is not None and not conn.scalar(select(exists().where(D.class_name == flt.defect_class))):
                known = ", ".join(self.defect_classes()) or "none"
                raise FilterError("defect_class", f"unknown defect class {flt.defect_class!r} (known: {known})")
            if flt.station_id is not None and not conn.scalar(select(exists().where(I.station_id == flt.station_id))):
                raise FilterError("station_id", f"unknown station {flt.station_id!r} (known: {', '.join(self.stations()) or 'none'})")

    # -- lists
    def page(
        self, flt: HistoryFilter, *, limit: int = 50, offset: int = 0, cursor: Cursor | None = None, check: bool = True
    ) -> Page:
        """One page of inspection summaries, newest first. Give ``cursor`` (from the previous
        page) for keyset paging, or ``offset``."""
        limit = self._limit(limit)
        if offset < 0:
            raise FilterError("offset", f"must be >= 0, got {offset}")
        if check:
            self.check(flt)
        stmt = select(*[I[c] for c in SUMMARY_COLUMNS]).where(*self._where(flt))
        if cursor is not None:
            stmt = stmt.where(tuple_(I.triggered_at, I.id) < tuple_(cursor.triggered_at, cursor.id))
        stmt = stmt.order_by(I.triggered_at.desc(), I.id.desc()).limit(limit + 1).offset(offset)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
        has_more = len(rows) > limit
        rows = rows[:limit]
        nxt = Cursor(rows[-1]["triggered_at"], rows[-1]["id"]) if has_more and rows else None
        return Page(rows, limit, offset, has_more, nxt)

    def count(self, flt: HistoryFilter, *, check: bool = True) -> int:
        if check:
            self.check(flt)
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(InspectionRow).where(*self._where(flt))))

    def verdict_counts(self, station_id: str, since: dt.datetime) -> list[tuple[str, str | None, str | None, int]]:
        """One station's inspections triggered at or after ``since`` (aware), grouped: rows of
        (outcome, top_class, reject_reason, count). Seeds the operator's counters at start-up
        (``station.counters``); uses the station/time index."""
        stmt = (
            select(I.outcome, I.top_class, I.reject_reason, func.count())
            .where(I.station_id == station_id, I.triggered_at >= since)
            .group_by(I.outcome, I.top_class, I.reject_reason)
        )
        with self.engine.connect() as conn:
            return [(r[0], r[1], r[2], int(r[3])) for r in conn.execute(stmt)]

    def inspection(self, inspection_id: int) -> InspectionDetail | None:
        """Everything stored about one inspection, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(*[I[c] for c in EXPORT_COLUMNS]).where(I.id == inspection_id)).first()
            if row is None:
                return None
            defects = [
                dict(r._mapping)
                for r in conn.execute(
                    select(*[D[c] for c in DEFECT_COLUMNS]).where(D.inspection_id == inspection_id).order_by(D.id)
                )
            ]
            t = ImageRow.__table__.c
            images = [
                dict(r._mapping)
                for r in conn.execute(
                    select(t.id, t.view, t.kind, t.path, t.sha256, t.bytes, t.created_at)
                    .where(t.inspection_id == inspection_id)
                    .order_by(t.id)
                )
            ]
            r_ = ReviewRow.__table__.c
            reviews = [
                dict(r._mapping)
                for r in conn.execute(
                    select(r_.id, r_.defect_id, r_.label, r_.comment, r_.reviewer, r_.at)
                    .where(r_.inspection_id == inspection_id)
                    .order_by(r_.id)
                )
            ]
        return InspectionDetail(dict(row._mapping), defects, images, reviews)

    # -- aggregates
    def yield_by_hour(self, flt: HistoryFilter, *, check: bool = True) -> list[YieldBucket]:
        """Passed/rejected/reviewed per UTC hour (hours without parts are absent), oldest first."""
        if check:
            self.check(flt)
        return [YieldBucket(start, t, p, t - p - r, r) for start, t, p, r in self._buckets(flt, "hour")]

    def yield_by_shift(self, flt: HistoryFilter, plan: ShiftPlan | None = None, *, check: bool = True) -> list[ShiftYield]:
        """Passed/rejected/reviewed per shift instance (shift name + local start date), oldest first.

        Counted from hourly buckets when every shift boundary and the zone's UTC offset fall on
        whole hours (most plants), else from per-minute buckets (slower on long ranges)."""
        plan = plan or ShiftPlan.three_shifts()
        try:
            tz = plan.zone()
        except ValueError as exc:
            raise FilterError("timezone", str(exc)) from None
        if check:
            self.check(flt)
        totals: dict[tuple[dt.date, str], list[int]] = {}
        order: dict[tuple[dt.date, str], dt.time] = {}
        span = None
        for start, t, p, r in self._buckets(flt, self._shift_unit(plan, tz, flt)):
            if span is None or not span.start <= start < span.end:  # buckets come in time order
                span = plan.span_at(start)  # station.shifts: the one rule for which shift a moment is in
            if span.name is None:
                continue  # between shifts
            acc = totals.setdefault((span.date, span.name), [0, 0, 0])
            acc[0] += t
            acc[1] += p
            acc[2] += r
            order[(span.date, span.name)] = span.start
        keys = sorted(totals, key=lambda k: order[k])
        return [ShiftYield(name, day, parts, passed, parts - passed - reviewed, reviewed)
                for day, name in keys for parts, passed, reviewed in [totals[(day, name)]]]

    @staticmethod
    def _shift_unit(plan: ShiftPlan, tz: zoneinfo.ZoneInfo, flt: HistoryFilter) -> str:
        if any(t.minute or t.second for s in plan.shifts for t in (s.start, s.end)):
            return "minute"
        now = dt.datetime.now(dt.timezone.utc)
        lo, hi = flt.since or now - dt.timedelta(days=366), flt.until or now
        probes = [lo + (hi - lo) * k / 24 for k in range(25)]  # offsets change at most a few times a year
        if any(p.astimezone(tz).utcoffset().total_seconds() % 3600 for p in probes):
            return "minute"
        return "hour"

    def pareto(self, flt: HistoryFilter, *, check: bool = True) -> list[ParetoEntry]:
        """Defect counts by class, most frequent first, with share and cumulative share."""
        if check:
            self.check(flt)
        stmt = select(D.class_name, func.count().label("n")).select_from(DefectRow)
        conds = []
        if flt.since is not None:
            conds.append(D.triggered_at >= flt.since)
        if flt.until is not None:
            conds.append(D.triggered_at < flt.until)
        if flt.defect_class is not None:
            conds.append(D.class_name == flt.defect_class)
        rest = flt.model_copy(update={"defect_class": None})
        if rest.model_copy(update={"since": None, "until": None}) != HistoryFilter():
            # the time range on both tables lets each use its time index (5x faster on PostgreSQL)
            stmt = stmt.join(InspectionRow, I.id == D.inspection_id)
            conds.extend(self._where(rest))
        stmt = stmt.where(*conds).group_by(D.class_name).order_by(func.count().desc(), D.class_name)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        total = sum(n for _, n in rows) or 1
        out, running = [], 0
        for name, n in rows:
            running += n
            out.append(ParetoEntry(name, int(n), n / total, running / total))
        return out

    def outcome_counts(self, flt: HistoryFilter, *, check: bool = True) -> list[tuple[str, str | None, int]]:
        """(outcome, reject_reason, parts) of the inspections in ``flt``, most parts first."""
        if check:
            self.check(flt)
        n = func.count()
        stmt = (select(I.outcome, I.reject_reason, n).where(*self._where(flt)).group_by(I.outcome, I.reject_reason)
                .order_by(n.desc(), I.outcome))
        with self.engine.connect() as conn:
            return [(o, r, int(k)) for o, r, k in conn.execute(stmt)]

    def recipe_versions_used(self, flt: HistoryFilter, *, check: bool = True) -> list[dict[str, Any]]:
        """Each recipe version that inspected parts in ``flt``: recipe_name, recipe_version,
        recipe_hash, parts, first and last trigger time (UTC), in order of first use."""
        if check:
            self.check(flt)
        first = func.min(I.triggered_at)
        stmt = (select(I.recipe_name, I.recipe_version, I.recipe_hash, func.count().label("parts"), first.label("first"),
                       func.max(I.triggered_at).label("last"))
                .where(*self._where(flt)).group_by(I.recipe_name, I.recipe_version, I.recipe_hash).order_by(first))
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
        for r in rows:  # aggregates come back as text on SQLite
            for k in ("first", "last"):
                if isinstance(r[k], str):
                    r[k] = dt.datetime.fromisoformat(r[k])
                r[k] = r[k].replace(tzinfo=dt.timezone.utc) if r[k].tzinfo is None else r[k]
        return rows

    # -- export
    def iter_export(
        self, flt: HistoryFilter, *, limit: int | None = None, with_defects: bool = False, batch: int = 1000, check: bool = True
    ) -> Iterator[dict[str, Any]]:
        """Inspections (EXPORT_COLUMNS, newest first), streamed in batches; with their defects if asked."""
        if check:
            self.check(flt)
        cursor: Cursor | None = None
        left = limit
        while left is None or left > 0:
            n = batch if left is None else min(batch, left)
            stmt = select(*[I[c] for c in EXPORT_COLUMNS]).where(*self._where(flt))
            if cursor is not None:
                stmt = stmt.where(tuple_(I.triggered_at, I.id) < tuple_(cursor.triggered_at, cursor.id))
            stmt = stmt.order_by(I.triggered_at.desc(), I.id.desc()).limit(n)
            with self.engine.connect() as conn:
                rows = [dict(r._mapping) for r in conn.execute(stmt)]
                if with_defects and rows:
                    by_id: dict[int, list] = {r["id"]: [] for r in rows}
                    for d in conn.execute(
                        select(D.inspection_id, *[D[c] for c in DEFECT_COLUMNS])
                        .where(D.inspection_id.in_(list(by_id)))
                        .order_by(D.id)
                    ):
                        m = dict(d._mapping)
                        by_id[m.pop("inspection_id")].append(m)
                    for r in rows:
                        r["defects"] = by_id[r["id"]]
            yield from rows
            if len(rows) < n:
                return
            cursor = Cursor(rows[-1]["triggered_at"], rows[-1]["id"])
            if left is not None:
                left -= len(rows)

    # -- internals
    def _limit(self, limit: int) -> int:
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= self.MAX_LIMIT:
            raise FilterError("limit", f"must be an integer 1..{self.MAX_LIMIT}, got {limit!r}")
        return limit

    def _where(self, flt: HistoryFilter) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = []
        if flt.since is not None:
            conds.append(I.triggered_at >= flt.since)
        if flt.until is not None:
            conds.append(I.triggered_at < flt.until)
        if flt.recipe is not None:
            conds.append(I.recipe_name == flt.recipe)
        if flt.verdict is not None:
            conds.append(I.outcome == flt.verdict)
        if flt.part_id is not None:
            conds.append(I.part_id == flt.part_id)
        if flt.station_id is not None:
            conds.append(I.station_id == flt.station_id)
        if flt.defect_class is not None:
            sub = select(D.inspection_id).where(D.class_name == flt.defect_class)
            if flt.since is not None:
                sub = sub.where(D.triggered_at >= flt.since)
            if flt.until is not None:
                sub = sub.where(D.triggered_at < flt.until)
            conds.append(I.id.in_(sub.offset(0) if self._fence else sub))
        return conds

    def _buckets(self, flt: HistoryFilter, unit: str) -> list[tuple[dt.datetime, int, int, int]]:
        """(bucket start UTC, parts, passed, reviewed) per hour or minute with parts, oldest first."""
        bucket = _BUCKETS[unit](I.triggered_at)
        passed = func.sum(case((I.outcome == "pass", 1), else_=0))
        reviewed = func.sum(case((I.outcome == "review", 1), else_=0))
        stmt = (select(bucket.label("b"), func.count(), passed, reviewed).where(*self._where(flt))
                .group_by(bucket).order_by(bucket))
        with self.engine.connect() as conn:
            return [(_bucket_start(b), int(t), int(p or 0), int(r or 0)) for b, t, p, r in conn.execute(stmt)]


def _distinct(conn, col) -> list:
    """Sorted distinct values of an indexed column, by index seeks (a "loose index scan").

    SQLite plans DISTINCT on an indexed column this way by itself; PostgreSQL would read the
    whole index, so there a recursive query jumps from one value to the next."""
    if conn.dialect.name != "postgresql":
        return sorted(v for v in conn.scalars(select(col).distinct()) if v is not None)
    other = col.table.alias()
    seed = select(func.min(col).label("v")).cte("vals", recursive=True)
    step = select(
        select(func.min(other.c[col.name])).where(other.c[col.name] > seed.c.v).scalar_subquery()
    ).where(seed.c.v.is_not(None))
    vals = seed.union_all(step)
    return [v for v in conn.scalars(select(vals.c.v).where(vals.c.v.is_not(None)).order_by(vals.c.v))]


def summary_dict(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready copy of a row (datetimes as ISO 8601 with offset)."""
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()}


__all__ = [
    "HistoryQueries", "HistoryFilter", "FilterError", "Page", "Cursor", "YieldBucket", "Shift", "ShiftPlan",
    "ShiftYield", "ParetoEntry", "InspectionDetail", "SUMMARY_COLUMNS", "EXPORT_COLUMNS", "DEFECT_COLUMNS",
    "summary_dict",
]
