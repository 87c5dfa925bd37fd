"""`station history --format csv` opens right in a spreadsheet: real SQLite files, the real
command in a subprocess, the file read back with Python's csv module and checked against the
database (issue 22, section 4, quality engineer)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import subprocess
import sys
import zoneinfo
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from history_testkit import history_file, make_inspection, station_file
from station.db.engine import make_engine
from station.db.export import BOM, DEFECT_CELLS, JSON_COLUMNS, PART_COLUMNS, flatten, read_csv
from station.db.models import DefectRow, InspectionRow

REPO = Path(__file__).resolve().parents[2]
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
# winter (+01:00) and summer (+02:00) time, and the night of the autumn clock change
WHEN = [dt.datetime(2026, 1, 15, 5, 30, tzinfo=dt.timezone.utc), dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.timezone.utc),
        dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.timezone.utc), dt.datetime(2026, 10, 25, 1, 30, tzinfo=dt.timezone.utc)]
CLASSES = ("scratch", "Kratzer-überlänge", "crack")  # a class name a Windows code page would garble


@pytest.fixture
def history(tmp_path):
    # 0..4 defects: passes, single and many-defect rejects
    return history_file(tmp_path, "excel-st", (
        make_inspection(i, reject=i % 5 > 0, n_defects=i % 5, classes=CLASSES, when=WHEN[i % len(WHEN)] + dt.timedelta(seconds=i))
        for i in range(24)))


def station(*argv: str, tz: str = "Europe/Berlin") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")} | {"TZ": tz}
    return subprocess.run([sys.executable, "-m", "station.cli", *argv], cwd=REPO, env=env, capture_output=True,
                          timeout=120)


def stored(url: str) -> dict[int, InspectionRow]:
    engine = make_engine(url)
    with Session(engine) as s:
        rows = {r.id: r for r in s.scalars(select(InspectionRow).options(selectinload(InspectionRow.defects)))}
        s.expunge_all()
    engine.dispose()
    return rows


def test_csv_has_bom_crlf_local_times_with_offset_and_no_json(history, tmp_path):
    target = tmp_path / "parts.csv"
    done = station("history", "--db", history, "--format", "csv", "--limit", "0", "-o", str(target))
    assert done.returncode == 0, done.stderr
    raw = target.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 byte-order mark: Excel reads the file as UTF-8
    assert raw.count(b"\n") == raw.count(b"\r\n") > 24  # CRLF, every line
    assert "Kratzer-überlänge".encode() in raw
    with open(target, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    db = stored(history)
    assert len(rows) == len(db) == 24
    for row in rows:
        orm = db[int(row["id"])]
        t = dt.datetime.fromisoformat(row["triggered_at"])
        assert t == orm.triggered_at  # the same instant …
        assert t.utcoffset() == orm.triggered_at.astimezone(BERLIN).utcoffset()  # … in Berlin's time, DST included
        assert row["local_time"] == orm.triggered_at.astimezone(BERLIN).strftime("%Y-%m-%d %H:%M:%S")
        assert float(row["timings_ms.total"]) == pytest.approx(orm.timings_ms["total"])
        for cls in CLASSES:
            col = f"count.{cls}"
            if col in row:
                assert int(row[col]) == sum(d.class_name == cls for d in orm.defects)
        for k, d in enumerate(orm.defects, 1):
            assert row[f"defect{k}.class_name"] == d.class_name
            assert float(row[f"defect{k}.confidence"]) == pytest.approx(d.confidence)
        for cell in row.values():
            assert not cell.startswith(("{", "[")), cell  # no JSON cell
    assert {int(dt.datetime.fromisoformat(r["triggered_at"]).utcoffset().total_seconds()) for r in rows} == {3600, 7200}
    # the summer/winter switch night: 02:30 local happens twice, told apart by the offset
    switch = {r["triggered_at"][:19]: r["triggered_at"][-6:] for r in rows if r["triggered_at"].startswith("2026-10-25T02:30")}
    assert set(switch.values()) == {"+02:00", "+01:00"}
    # the typed reader gives the stored values back (text un-neutralised, dicts as flat cells)
    with open(target, encoding="utf-8", newline="") as f:
        back = list(read_csv(f))
    for row in back:
        orm = db[row["id"]]
        assert {c: row[c] for c in PART_COLUMNS} == {c: getattr(orm, c) for c in PART_COLUMNS}
        assert {c: row[c] for c in JSON_COLUMNS} == {c: flatten(getattr(orm, c)) for c in JSON_COLUMNS}


def test_one_row_per_defect_matches_the_database(history, tmp_path):
    target = tmp_path / "defects.csv"
    done = station("history", "--db", history, "--format", "csv", "--per-defect", "--limit", "0", "--verdict", "reject",
                   "--timezone", "America/New_York", "-o", str(target), tz="UTC")
    assert done.returncode == 0, done.stderr
    raw = target.read_bytes()
    assert raw.startswith(BOM.encode()) and raw.count(b"\n") == raw.count(b"\r\n")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    engine = make_engine(history)
    with Session(engine) as s:
        n_defects = s.scalar(select(func.count()).select_from(DefectRow).join(InspectionRow)
                             .where(InspectionRow.outcome == "reject"))
        by_part = {}
        for iid, cls, conf in s.execute(select(DefectRow.inspection_id, DefectRow.class_name, DefectRow.confidence)
                                        .order_by(DefectRow.id)):
            by_part.setdefault(iid, []).append((cls, conf))
    engine.dispose()
    assert n_defects > 24 and len(rows) == n_defects  # every reject here has defects: one row each
    got: dict[int, list] = {}
    for r in rows:
        got.setdefault(int(r["id"]), []).append((r["defect.class_name"], pytest.approx(float(r["defect.confidence"]))))
        assert dt.datetime.fromisoformat(r["triggered_at"]).utcoffset() in (dt.timedelta(hours=-5), dt.timedelta(hours=-4))
        assert r["outcome"] == "reject" and r["defect_count"] == str(len(by_part[int(r["id"])]))
    assert got == {i: by_part[i] for i in got} and set(got) <= set(by_part)
    assert [f"defect.{c}" for c in DEFECT_CELLS] == list(rows[0])[-len(DEFECT_CELLS):]


def test_per_defect_keeps_parts_without_defects_as_one_row(history, tmp_path):
    target = tmp_path / "all.csv"
    assert station("history", "--db", history, "--format", "csv", "--per-defect", "--limit", "0", "-o", str(target)).returncode == 0
    with open(target, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    db = stored(history)
    assert len(rows) == sum(max(1, len(r.defects)) for r in db.values())
    empty = [r for r in rows if r["defect.class_name"] == ""]
    assert {int(r["id"]) for r in empty} == {i for i, r in db.items() if not r.defects}


def test_jsonl_stays_machine_data_in_utc(history):
    done = station("history", "--db", history, "--format", "jsonl", "--defects", "--limit", "0")
    assert done.returncode == 0 and not done.stdout.startswith(b"\xef\xbb\xbf")
    import json

    rows = [json.loads(line) for line in done.stdout.decode().splitlines()]
    db = stored(history)
    for r in rows:
        assert r["triggered_at"].endswith("+00:00") and isinstance(r["timings_ms"], dict)
        assert [d["class_name"] for d in r["defects"]] == [d.class_name for d in db[r["id"]].defects]


def test_an_unknown_timezone_is_refused(history, tmp_path):
    done = station("history", "--db", history, "--format", "csv", "--timezone", "Mars/Olympus", "-o", str(tmp_path / "x.csv"))
    assert done.returncode == 2 and b"unknown time zone 'Mars/Olympus'" in done.stderr
    assert not (tmp_path / "x.csv").exists()


def test_decimal_comma_for_a_spreadsheet_set_up_in_german(history, tmp_path):
    """The station file's [export] decimal_separator = ",": cells separated by semicolons and
    numbers with a decimal comma (as Excel saves "CSV (semicolon)" in those locales), the same
    cells as the default file otherwise, and read_csv gives the same values back from both."""
    point, comma = tmp_path / "point.csv", tmp_path / "comma.csv"
    assert station("history", "--db", history, "--format", "csv", "--limit", "0", "-o", str(point)).returncode == 0
    config = station_file(tmp_path / "station.toml", history, '[export]\ndecimal_separator = ","\n')
    done = station("history", "--config", str(config), "--format", "csv", "--limit", "0", "-o", str(comma))
    assert done.returncode == 0, done.stderr
    text = comma.read_text(encoding="utf-8-sig")
    with open(point, encoding="utf-8-sig", newline="") as f:
        by_point = list(csv.DictReader(f))
    by_comma = list(csv.DictReader(io.StringIO(text, newline=""), delimiter=";"))
    assert [list(r) for r in by_comma] == [list(r) for r in by_point]  # the same columns, split on ';'
    db = stored(history)
    numbers = 0
    for pr, cr in zip(by_point, by_comma):
        orm = db[int(cr["id"])]
        assert float(cr["timings_ms.total"].replace(",", ".")) == pytest.approx(orm.timings_ms["total"])
        for k, d in enumerate(orm.defects, 1):
            cell = cr[f"defect{k}.confidence"]
            assert "." not in cell and float(cell.replace(",", ".")) == pytest.approx(d.confidence)
            numbers += 1
        assert cr["triggered_at"] == pr["triggered_at"] and cr["local_time"] == pr["local_time"]  # times: text as before
        assert cr["defect_count"] == pr["defect_count"]  # integers: no separator to change
    assert numbers > 24
    with open(point, encoding="utf-8", newline="") as f, open(comma, encoding="utf-8", newline="") as g:
        typed = (*PART_COLUMNS, *JSON_COLUMNS, "counts")  # read_csv types these; the rest is text as written
        assert [{c: r[c] for c in typed} for r in read_csv(g)] == [{c: r[c] for c in typed} for r in read_csv(f)]
    # the command line overrides the station file
    again = tmp_path / "again.csv"
    assert station("history", "--config", str(config), "--format", "csv", "--limit", "0", "--decimal-separator", ".",
                   "-o", str(again)).returncode == 0
    assert again.read_bytes() == point.read_bytes()
