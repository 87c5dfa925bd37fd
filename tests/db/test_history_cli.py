"""`station history` and `station db …` on real SQLite files."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sqlite3
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from station.db.engine import make_engine
from station.db.export import JSON_COLUMNS, flatten, read_csv
from station.db.models import InspectionRow
from station.db.queries import EXPORT_COLUMNS
from station.db.writer import HistoryWriter
from history_testkit import make_inspection, station_file
from station.alarms import AlarmBoard
from station.commands import history as history_cmd
from station.config import ArchiveConfig, DatabaseConfig

REPO = Path(__file__).resolve().parents[2]


def as_exported(orm: InspectionRow) -> dict:
    """A stored inspection as the CSV's typed reader gives it back: dict columns flattened."""
    return {c: flatten(getattr(orm, c)) if c in JSON_COLUMNS else getattr(orm, c) for c in EXPORT_COLUMNS}


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="station")
    history_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def filled(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    w = HistoryWriter(DatabaseConfig(url=url), ArchiveConfig(dir=tmp_path / "img"), AlarmBoard(), "cli-st")
    w.start()
    for i in range(30):
        w.publish(make_inspection(i, reject=i % 3 == 0, recipe="alpha" if i % 2 else "beta"))
    assert w.flush(10)
    w.close()
    return url, tmp_path


def test_history_table_lists_newest_first(filled, capsys):
    url, _ = filled
    code, out, _ = run(["history", "--db", url, "--verdict", "reject", "--limit", "5"], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["id", "triggered_at"] and lines[-1] == "(5 inspections, newest first)"
    ids = [int(line.split()[0]) for line in lines[1:-1]]
    assert ids == sorted(ids, reverse=True) and all("reject" in line for line in lines[1:-1])


def test_history_csv_export_equals_the_stored_rows(filled, capsys, tmp_path):
    url, _ = filled
    target = tmp_path / "out.csv"
    code, _, err = run(["history", "--db", url, "--format", "csv", "--limit", "0", "--recipe", "alpha", "-o", str(target)], capsys)
    assert code == 0 and "15 inspections written" in err
    with open(target, encoding="utf-8", newline="") as f:
        back = list(read_csv(f))
    engine = make_engine(url)
    with Session(engine) as s:
        stored = s.scalars(select(InspectionRow).where(InspectionRow.recipe_name == "alpha").order_by(InspectionRow.id.desc())).all()
        assert [{c: r[c] for c in EXPORT_COLUMNS} for r in back] == [as_exported(r) for r in stored]
    engine.dispose()


def test_history_jsonl_with_defects(filled, capsys):
    url, _ = filled
    code, out, _ = run(["history", "--db", url, "--format", "jsonl", "--defects", "--class", "crack"], capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows and all(any(d["class_name"] == "crack" for d in r["defects"]) for r in rows)


def test_history_summary_prints_yield_and_pareto(filled, capsys):
    url, _ = filled
    code, out, _ = run(["history", "--db", url, "--summary", "--timezone", "Europe/Berlin"], capsys)
    assert code == 0
    assert "yield per hour" in out and "yield per shift (Europe/Berlin)" in out and "defect Pareto" in out
    assert " 30 parts " in out.replace("     ", " ") or "30 parts" in out


def test_history_summary_counts_the_station_files_shifts(filled, capsys, tmp_path):
    url, _ = filled
    config = station_file(tmp_path / "station.toml", url)
    code, out, err = run(["history", "--config", str(config), "--summary"], capsys)
    assert code == 0, err
    per_shift = out.split("yield per shift (Asia/Tokyo):")[1].split("defect Pareto")[0].split()
    assert set(per_shift) & {"day", "swing"} and not set(per_shift) & {"early", "late", "night"}
    code, out, err = run(["history", "--config", str(config), "--summary", "--timezone", "Mars/Olympus"], capsys)
    assert code == 2 and "unknown time zone 'Mars/Olympus'" in err


@pytest.mark.parametrize("argv,needle", [
    (["--since", "last tuesday"], "since: 'last tuesday' is not a date/time"),
    (["--verdict", "fail"], "verdict: 'fail' is not a verdict"),
    (["--recipe", "x'; DROP TABLE inspections; --"], "recipe:"),
    (["--recipe", "gamma"], "unknown recipe 'gamma' (known: alpha, beta)"),
    (["--class", "dent"], "unknown defect class 'dent'"),
    (["--part", "7 OR 1=1"], "part_id:"),
    (["--limit", "-1"], "limit:"),
])
def test_bad_filters_exit_2_with_the_reason(filled, capsys, argv, needle):
    url, _ = filled
    code, out, err = run(["history", "--db", url] + argv, capsys)
    assert code == 2 and needle in err and out == ""
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM inspections")).scalar() == 30
    engine.dispose()


def test_db_upgrade_check_and_newer_schema(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    assert run(["db", "upgrade", "--db", url], capsys)[1].strip() == "schema: empty -> 0002"
    assert run(["db", "upgrade", "--db", url], capsys)[1].strip() == "schema already at 0002"
    code, out, _ = run(["db", "check", "--db", url], capsys)
    assert code == 0 and "integrity_check: ok" in out and out.strip().endswith("ok")
    with sqlite3.connect(tmp_path / "new.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'zz_future'")
    code, _, err = run(["db", "upgrade", "--db", url], capsys)
    assert code == 1 and "zz_future" in err and "newer" in err
    code, _, err = run(["db", "check", "--db", url], capsys)
    assert code == 1 and "newer" in err


def test_db_check_reports_a_corrupt_file(filled, capsys):
    url, tmp = filled
    path = tmp / "h.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    data = bytearray(path.read_bytes())
    for p in range(2, pages):  # leave the header page, scramble every other page's body
        data[p * page + 16: p * page + 200] = os.urandom(184)
    path.write_bytes(bytes(data))
    code, out, err = run(["db", "check", "--db", url], capsys)
    assert code == 1 and "problem" in err


def test_db_backup_of_a_live_database(filled, capsys, tmp_path):
    url, _ = filled
    w = HistoryWriter(DatabaseConfig(url=url), ArchiveConfig(dir=tmp_path / "img"), AlarmBoard(), "cli-st")
    w.start()
    stop = threading.Event()

    def feed():
        i = 1000
        while not stop.is_set():
            w.publish(make_inspection(i, reject=True))
            i += 1
            stop.wait(0.001)

    t = threading.Thread(target=feed)
    t.start()
    try:
        code, out, _ = run(["db", "backup", "--db", url, str(tmp_path / "b" / "copy.db")], capsys)
    finally:
        stop.set()
        t.join()
        w.flush(10)
        w.close()
    assert code == 0 and "backup of" in out
    with sqlite3.connect(tmp_path / "b" / "copy.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        n = conn.execute("SELECT count(*) FROM inspections").fetchone()[0]
        bad = conn.execute("SELECT count(*) FROM inspections i WHERE defect_count != (SELECT count(*) FROM defects d WHERE d.inspection_id = i.id)").fetchone()[0]
    assert n >= 30 and bad == 0
    code, _, err = run(["db", "backup", "--db", url, str(tmp_path / "b" / "copy.db")], capsys)
    assert code == 1 and "exists" in err
    code, _, err = run(["db", "backup", "--db", "postgresql+psycopg://u@127.0.0.1/x", str(tmp_path / "pg.db")], capsys)
    assert code == 2 and "pg_dump" in err


def test_db_sweep_with_a_station_file(filled, capsys):
    url, tmp = filled
    (tmp / "img" / "2020").mkdir()
    orphan = tmp / "img" / "2020" / "orphan.png"
    orphan.write_bytes(b"x")
    os.utime(orphan, (1, 1))
    station = tmp / "station.toml"
    station.write_text(
        f'station_id = "cli-st"\nactive_recipe = "alpha"\n[[cameras]]\ntype = "simulated"\n'
        f'[database]\nurl = "{url}"\n[archive]\ndir = "img"\nretention_days = 3650\n'
    )
    code, out, _ = run(["db", "sweep", "--config", str(station), "--dry-run"], capsys)
    assert code == 0 and "1 files without row" in out and orphan.exists()
    code, out, _ = run(["db", "sweep", "--config", str(station)], capsys)
    assert code == 0 and "1 files without row" in out and not orphan.exists()
    code, out, _ = run(["db", "check", "--config", str(station)], capsys)
    assert code == 0 and "0 files without row, 0 rows without file" in out


def test_station_entry_point_has_the_history_commands(filled):
    url, _ = filled
    r = subprocess.run([sys.executable, "-m", "station.cli", "history", "--db", url, "--limit", "3", "--format", "jsonl"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 3


def test_history_into_a_closed_pipe_and_from_an_unreachable_server(tmp_path):
    url = f"sqlite:///{tmp_path / 'big.db'}"
    w = HistoryWriter(DatabaseConfig(url=url), ArchiveConfig(dir=tmp_path / "img"), AlarmBoard(), "cli-st")
    w.start()
    for i in range(400):
        insp = make_inspection(i, reject=True)
        insp.views, insp.overlay = [], None
        w.publish(insp)
    assert w.flush(30)
    w.close()
    # ~500 KB of JSONL into a pipe that closes after 2 lines: more than the pipe buffer holds
    r = subprocess.run(f"{sys.executable} -m station.cli history --db {url} --limit 0 --format jsonl --defects | head -n 2",
                       shell=True, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert len(r.stdout.splitlines()) == 2
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    r = subprocess.run([sys.executable, "-m", "station.cli", "history", "--db", f"postgresql+psycopg://u@127.0.0.1:{port}/x"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "cannot read the history database" in r.stderr and "Traceback" not in r.stderr


def test_db_bench_runs_end_to_end_at_a_tiny_size(tmp_path, capsys):
    """The benchmark command itself works (figures come from real runs, not from tests)."""
    code, out, err = run(["db", "bench", "--dir", str(tmp_path), "--inserts", "300", "--rows", "3000", "--repeat", "2", "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["inserts"]["written"] == 300 and report["inserts"]["lost"] == 0
    assert report["large"]["rows"] == 3000
    assert set(report["queries"]) >= {"latest 50 (no filter)", "Pareto, last 7 days", "yield per shift, last 7 days"}
    assert "inspections/s" in err
