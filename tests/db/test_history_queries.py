"""History queries on SQLite and a real PostgreSQL: filters, paging, yield, Pareto, export, hostile input."""

from __future__ import annotations

import collections
import datetime as dt
import io
import zoneinfo

import numpy as np
import pytest
from sqlalchemy import event, inspect, select
from sqlalchemy.orm import Session, selectinload

from station.db import rle
from station.db.export import JSON_COLUMNS, flatten, read_csv, read_jsonl, write_csv, write_jsonl
from station.db.filters import FilterError, HistoryFilter
from station.db.models import InspectionRow
from station.db.queries import EXPORT_COLUMNS, HistoryQueries, Shift, ShiftPlan
from station.db.writer import HistoryWriter
from history_testkit import make_inspection
from station.alarms import AlarmBoard
from station.config import ArchiveConfig, DatabaseConfig

T0 = dt.datetime(2026, 3, 2, 0, 7, tzinfo=dt.timezone.utc)
N = 240  # one part every 15 minutes: 2.5 days
HOSTILE_REASON = "scratch'); DROP TABLE inspections; --"


def spec(i: int) -> dict:
    return {
        "when": T0 + dt.timedelta(minutes=15 * i),
        "reject": i % 4 == 0 or i % 7 == 0,
        "recipe": "alpha" if i % 3 else "beta",
        "part_id": 1000 + i,
        "station": "line-1" if i % 5 else "line-2",
    }


@pytest.fixture
def history(migrated, tmp_path):
    """N inspections stored through the real HistoryWriter; returns (queries, inspections)."""
    written = []
    writers = {}
    for i in range(N):
        s = spec(i)
        insp = make_inspection(i, reject=s["reject"], when=s["when"], recipe=s["recipe"], part_id=s["part_id"],
                               reason=HOSTILE_REASON if i == 8 else None)
        w = writers.get(s["station"])
        if w is None:
            w = writers[s["station"]] = HistoryWriter(
                DatabaseConfig(url=str(migrated.url)), ArchiveConfig(dir=tmp_path / s["station"], retention_days=3650), AlarmBoard(), s["station"], engine=migrated
            )
            w.start()
        w.publish(insp)
        written.append((insp, s))
    for w in writers.values():
        assert w.flush(30)
        assert w.stats.written == w.stats.published and w.stats.lost == 0
        w.close()
    return HistoryQueries(migrated), written


def ids_of(q: HistoryQueries, flt: HistoryFilter) -> list[int]:
    return [r["part_id"] for r in q.iter_export(flt)]


def expect(written, pred) -> list[int]:
    """Part IDs matching ``pred``, newest first (how queries order)."""
    return [insp.part_id for insp, s in sorted(written, key=lambda w: w[1]["when"], reverse=True) if pred(insp, s)]


def test_filters_select_exactly_the_matching_inspections(history):
    q, written = history
    since, until = T0 + dt.timedelta(hours=10), T0 + dt.timedelta(hours=30)
    cases = [
        (HistoryFilter(), lambda i, s: True),
        (HistoryFilter(since=since, until=until), lambda i, s: since <= s["when"] < until),
        (HistoryFilter(recipe="beta"), lambda i, s: s["recipe"] == "beta"),
        (HistoryFilter(verdict="reject"), lambda i, s: s["reject"]),
        (HistoryFilter(verdict="pass", recipe="alpha"), lambda i, s: not s["reject"] and s["recipe"] == "alpha"),
        (HistoryFilter(defect_class="crack"), lambda i, s: any(d.class_name == "crack" for d in i.defects)),
        (HistoryFilter(defect_class="stain", since=since), lambda i, s: s["when"] >= since and any(d.class_name == "stain" for d in i.defects)),
        (HistoryFilter(part_id=1017), lambda i, s: i.part_id == 1017),
        (HistoryFilter(station_id="line-2", verdict="reject"), lambda i, s: s["station"] == "line-2" and s["reject"]),
    ]
    for flt, pred in cases:
        want = expect(written, pred)
        assert want, f"test data has no match for {flt}"
        assert ids_of(q, flt) == want, flt
        assert q.count(flt) == len(want), flt


def test_offset_and_keyset_paging_visit_every_row_once_in_order(history):
    q, written = history
    flt = HistoryFilter(verdict="pass")
    want = expect(written, lambda i, s: not s["reject"])
    by_cursor, cursor = [], None
    while True:
        page = q.page(flt, limit=17, cursor=cursor)
        by_cursor += [r["part_id"] for r in page.items]
        if not page.has_more:
            break
        cursor = page.next_cursor
    by_offset, offset = [], 0
    while True:
        page = q.page(flt, limit=17, offset=offset)
        by_offset += [r["part_id"] for r in page.items]
        offset += 17
        if not page.has_more:
            break
    assert by_cursor == want and by_offset == want


def test_yield_per_hour_matches_the_data(history):
    q, written = history
    want = collections.defaultdict(lambda: [0, 0])
    for insp, s in written:
        if s["recipe"] == "alpha":
            hour = s["when"].replace(minute=0, second=0, microsecond=0)
            want[hour][0] += 1
            want[hour][1] += 0 if s["reject"] else 1
    got = q.yield_by_hour(HistoryFilter(recipe="alpha"))
    assert [(b.start, b.total, b.passed) for b in got] == [(h, t, p) for h, (t, p) in sorted(want.items())]
    assert all(b.rejected == b.total - b.passed for b in got)


@pytest.mark.parametrize("zone,plan", [
    # +05:30 and a shift change at 14:30: counted per minute
    ("Asia/Kolkata", ShiftPlan((Shift("A", dt.time(6), dt.time(14, 30)), Shift("B", dt.time(14, 30), dt.time(22)),
                                Shift("N", dt.time(22), dt.time(6))), "Asia/Kolkata")),
    # whole-hour offset and boundaries: counted per hour
    ("Europe/Berlin", ShiftPlan((Shift("A", dt.time(6), dt.time(14)), Shift("B", dt.time(14), dt.time(22)),
                                 Shift("N", dt.time(22), dt.time(6))), "Europe/Berlin")),
])
def test_yield_per_shift_in_a_local_time_zone(history, zone, plan):
    q, written = history
    tz = zoneinfo.ZoneInfo(zone)
    a, b, n = plan.shifts
    want = collections.Counter()
    passed = collections.Counter()
    for insp, s in written:
        local = s["when"].astimezone(tz)
        t = local.time()
        if a.start <= t < a.end:
            key = (local.date(), "A")
        elif b.start <= t < b.end:
            key = (local.date(), "B")
        else:
            key = ((local - dt.timedelta(days=1)).date() if t < n.end else local.date(), "N")
        want[key] += 1
        passed[key] += 0 if s["reject"] else 1
    assert HistoryQueries._shift_unit(plan, tz, HistoryFilter()) == ("minute" if zone == "Asia/Kolkata" else "hour")
    got = q.yield_by_shift(HistoryFilter(), plan)
    assert {(g.date, g.shift): g.total for g in got} == dict(want)
    assert {(g.date, g.shift): g.passed for g in got} == dict(passed)
    assert [(g.date, g.shift) for g in got] == sorted(want, key=lambda k: (k[0], "ABN".index(k[1])))


def test_verdict_counts_of_one_station_since_a_time(history):
    """What seeds the operator's counters at start-up (station.counters)."""
    q, written = history
    since = T0 + dt.timedelta(hours=20, minutes=3)
    for station in ("line-1", "line-2", "nowhere"):
        mine = [insp for insp, s in written if s["station"] == station and s["when"] >= since]
        expected = collections.Counter(
            (insp.verdict.outcome.value, insp.verdict.top_defect.class_name if insp.verdict.top_defect else None,
             insp.verdict.reject_reason.value if insp.verdict.reject_reason else None)
            for insp in mine
        )
        got = q.verdict_counts(station, since)
        assert {row[:3]: row[3] for row in got} == expected and len(got) == len(expected)
        assert sum(n for *_, n in got) == len(mine)


def test_pareto_counts_defects_by_class(history):
    q, written = history
    since = T0 + dt.timedelta(hours=12)
    for flt, pred in [
        (HistoryFilter(), lambda s: True),
        (HistoryFilter(since=since, recipe="alpha"), lambda s: s["when"] >= since and s["recipe"] == "alpha"),
    ]:
        want = collections.Counter(d.class_name for insp, s in written if pred(s) for d in insp.defects)
        got = q.pareto(flt)
        assert {p.class_name: p.count for p in got} == dict(want)
        assert [p.count for p in got] == sorted(want.values(), reverse=True)
        assert got[-1].cumulative == pytest.approx(1.0)
        assert sum(p.share for p in got) == pytest.approx(1.0)


def test_details_keep_every_field_and_the_masks(history):
    q, written = history
    insp, s = next(w for w in written if w[1]["reject"] and w[0].defects)
    row_id = q.page(HistoryFilter(part_id=insp.part_id)).items[0]["id"]
    detail = q.inspection(row_id)
    r = detail.inspection
    v = insp.verdict
    assert (r["sequence"], r["part_id"], r["recipe_name"], r["outcome"], r["reason"], r["plc_code"]) == (
        insp.sequence, insp.part_id, insp.recipe_name, "reject", v.reason, v.plc_code)
    assert r["triggered_at"] == s["when"] and r["station_id"] == s["station"]
    assert r["model_hashes"] == insp.model_hashes and r["recipe_hash"] == insp.recipe_hash
    assert r["timings_ms"] == insp.timings_ms and r["scores"] == insp.scores
    assert r["top_class"] == v.top_defect.class_name and r["defect_count"] == len(insp.defects) == len(detail.defects)
    for d, stored in zip(insp.defects, detail.defects):
        assert (stored["class_name"], stored["view"], stored["area_px"], stored["zone"]) == (d.class_name, d.view, d.area_px, d.zone)
        assert (stored["x0"], stored["y0"], stored["x1"], stored["y1"]) == d.box
        assert stored["confidence"] == pytest.approx(d.confidence) and stored["area_mm2"] == pytest.approx(d.area_mm2)
        assert np.array_equal(rle.paste(stored["mask_rle"], d.box, d.mask.shape), d.mask)
    assert {(i["kind"], i["view"]) for i in detail.images} == {("raw", "top"), ("overlay", "top")}
    assert q.inspection(10**9) is None


def _stored(engine) -> dict[int, InspectionRow]:
    with Session(engine) as s:
        return {r.id: r for r in s.scalars(select(InspectionRow).options(selectinload(InspectionRow.defects)))}


def test_csv_export_round_trips_to_the_stored_rows(history):
    q, _ = history
    buf = io.StringIO()
    assert write_csv(lambda: q.iter_export(HistoryFilter(), batch=50, with_defects=True), buf, zone=dt.timezone.utc) == N
    back = list(read_csv(io.StringIO(buf.getvalue(), newline="")))
    stored = _stored(q.engine)
    assert len(back) == len(stored) == N
    for row in back:
        orm = stored[row["id"]]
        assert {c: flatten(getattr(orm, c)) if c in JSON_COLUMNS else getattr(orm, c) for c in EXPORT_COLUMNS} == \
            {c: row[c] for c in EXPORT_COLUMNS}
        assert row["counts"] == {c: n for c in {d.class_name for d in orm.defects}
                                 for n in [sum(d.class_name == c for d in orm.defects)]} | \
            {c: 0 for c in row["counts"] if c not in {d.class_name for d in orm.defects}}


def test_jsonl_export_round_trips_with_defects(history):
    q, _ = history
    buf = io.StringIO()
    assert write_jsonl(q.iter_export(HistoryFilter(verdict="reject"), with_defects=True), buf) > 0
    stored = _stored(q.engine)
    back = list(read_jsonl(io.StringIO(buf.getvalue())))
    assert {r["id"] for r in back} == {i for i, r in stored.items() if r.outcome == "reject"}
    for row in back:
        orm = stored[row["id"]]
        assert {c: getattr(orm, c) for c in EXPORT_COLUMNS} == {c: row[c] for c in EXPORT_COLUMNS}
        assert [d["id"] for d in row["defects"]] == [d.id for d in orm.defects]
        for d, od in zip(row["defects"], orm.defects):
            assert (d["class_name"], d["mask_rle"], d["confidence"], d["x0"], d["y1"]) == (od.class_name, od.mask_rle, od.confidence, od.x0, od.y1)
    hostile = [r for r in back if r["reason"] == HOSTILE_REASON]
    assert len(hostile) == 1  # stored and exported literally


@pytest.mark.parametrize("raw,field", [
    ({"since": "yesterday"}, "since"),
    ({"since": "2026-13-45"}, "since"),
    ({"until": "2026-03-02T25:00"}, "until"),
    ({"since": "2026-03-03", "until": "2026-03-02"}, ""),
    ({"verdict": "maybe"}, "verdict"),
    ({"verdict": "pass' OR '1'='1"}, "verdict"),
    ({"recipe": "alpha' OR 1=1 --"}, "recipe"),
    ({"recipe": "alpha; DROP TABLE inspections"}, "recipe"),
    ({"recipe": "Alpha"}, "recipe"),
    ({"defect_class": "crack'); DELETE FROM defects; --"}, "defect_class"),
    ({"defect_class": "crack\n"}, "defect_class"),
    ({"part_id": "1 OR 1=1"}, "part_id"),
    ({"part_id": "-1"}, "part_id"),
    ({"station_id": "line-1\" --"}, "station_id"),
    ({"colour": "red"}, "colour"),
])
def test_malformed_and_hostile_filters_are_clear_errors(raw, field):
    with pytest.raises(FilterError) as err:
        HistoryFilter.parse(**raw)
    assert err.value.field == field
    assert str(err.value)


def test_unknown_names_are_errors_not_empty_results(history):
    q, _ = history
    for flt, field, known in [
        (HistoryFilter(recipe="gamma"), "recipe", "alpha, beta"),
        (HistoryFilter(defect_class="dent"), "defect_class", "crack, scratch, stain"),
        (HistoryFilter(station_id="line-9"), "station_id", "line-1, line-2"),
    ]:
        with pytest.raises(FilterError, match=known) as err:
            q.page(flt)
        assert err.value.field == field
    with pytest.raises(FilterError, match="limit"):
        q.page(HistoryFilter(), limit=0)
    with pytest.raises(FilterError, match="limit"):
        q.page(HistoryFilter(), limit=10**9)


def test_filter_values_reach_sql_only_as_bound_parameters(history):
    q, _ = history
    statements = []
    listener = lambda conn, cursor, stmt, params, context, many: statements.append((stmt, params))  # noqa: E731
    event.listen(q.engine, "before_cursor_execute", listener)
    try:
        flt = HistoryFilter(recipe="alpha", defect_class="stain", part_id=1016, station_id="line-1",
                            since=T0, until=T0 + dt.timedelta(days=9))
        q.page(flt)
        q.count(flt)
        q.pareto(flt)
        q.yield_by_hour(flt)
    finally:
        event.remove(q.engine, "before_cursor_execute", listener)
    assert statements
    for stmt, params in statements:
        for value in ("alpha", "stain", "1016", "line-1", "2026-03-02"):
            assert value not in stmt, f"{value!r} inlined in SQL: {stmt}"
    assert any("alpha" in str(p) for _, p in statements)
    assert {"inspections", "defects"} <= set(inspect(q.engine).get_table_names())


def test_a_time_without_offset_is_read_in_the_given_zone():
    """Naive times are the station's local time (its zone, DST included); an offset wins."""
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    winter = HistoryFilter.parse(berlin, since="2026-01-15T06:00", until="2026-07-01T06:00")
    assert winter.since == dt.datetime(2026, 1, 15, 5, 0, tzinfo=dt.timezone.utc)  # CET, +01:00
    assert winter.until == dt.datetime(2026, 7, 1, 4, 0, tzinfo=dt.timezone.utc)  # CEST, +02:00
    given = HistoryFilter.parse(berlin, since="2026-01-15T06:00+09:00")
    assert given.since == dt.datetime(2026, 1, 14, 21, 0, tzinfo=dt.timezone.utc)
