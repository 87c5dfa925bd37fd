"""A corrupt SQLite history file at start-up (real files of garbage bytes, real databases cut
short) or one that turns corrupt under the running writer (its pages overwritten). The file is
set aside next to itself (never deleted), a fresh database takes the results, an alarm says
where the old file went, its images are kept, and the station goes on inspecting with the PLC:
never a PASS for a part it did not inspect."""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from station.db.archive import ImageArchive, reconcile
from station.db.engine import make_engine
from station.db.models import InspectionRow
from station.db.quarantine import corruption, says_corrupt, set_aside, set_aside_before
from station.db.writer import ALARM_DB, ALARM_DB_CORRUPT, HistoryWriter
from history_testkit import make_inspection
from station.alarms import AlarmBoard
from station.config import ArchiveConfig, DatabaseConfig

REPO = Path(__file__).resolve().parents[2]


def writer_for(tmp_path: Path, **kw) -> HistoryWriter:
    return HistoryWriter(DatabaseConfig(url=f"sqlite:///{tmp_path / 'history.db'}"), ArchiveConfig(dir=tmp_path / "images"),
                         AlarmBoard(), "st-1", **kw)


def rows(engine) -> list[InspectionRow]:
    with Session(engine) as s:
        return s.scalars(select(InspectionRow).options(selectinload(InspectionRow.images)).order_by(InspectionRow.id)).all()


def garbage(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def set_aside_copies(db: Path) -> list[Path]:
    """The set-aside database files next to ``db`` (not their -wal / -shm companions)."""
    return sorted(p for p in db.parent.glob(db.name + ".corrupt-*") if not p.name.endswith(("-wal", "-shm", "-journal")))


def quick_check(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [r[0] for r in con.execute("PRAGMA quick_check")]
    finally:
        con.close()


def write_real_history(tmp_path: Path, n: int) -> Path:
    """``n`` inspections (every third a reject with archived images) in tmp_path/history.db, all
    in the main file (WAL checkpointed)."""
    w = writer_for(tmp_path)
    w.start()
    for i in range(n):
        w.publish(make_inspection(i, reject=i % 3 == 0))
    assert w.flush(30) and w.stats.written == n
    w.close()
    db = tmp_path / "history.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return db


def test_a_file_of_garbage_bytes_is_set_aside_and_a_fresh_database_takes_the_results(tmp_path):
    db = tmp_path / "history.db"
    db.write_bytes(garbage(64 * 1024))
    Path(f"{db}-wal").write_bytes(garbage(4096, seed=8))  # its companions go with it
    assert corruption(db) == "file is not a database"

    w = writer_for(tmp_path)
    w.start()
    try:
        (moved,) = set_aside_copies(db)
        assert moved.read_bytes() == garbage(64 * 1024)
        assert Path(f"{moved}-wal").read_bytes() == garbage(4096, seed=8)
        assert w.alarms.is_active(ALARM_DB_CORRUPT) and not w.alarms.is_active(ALARM_DB)
        message = next(a.message for a in w.alarms.active() if a.key == ALARM_DB_CORRUPT)
        assert str(db) in message and str(moved) in message and "file is not a database" in message
        for i in range(5):
            w.publish(make_inspection(i, reject=i % 2 == 0))
        assert w.flush(30)
        assert (w.stats.written, w.stats.lost, w.stats.failed_attempts) == (5, 0, 0)
        assert [r.sequence for r in rows(w.engine)] == [0, 1, 2, 3, 4]
        # the fresh file took its first write: the alarm clears and stays listed until acknowledged
        assert not w.alarms.is_active(ALARM_DB_CORRUPT)
        (listed,) = [a for a in w.alarms.all() if a.key == ALARM_DB_CORRUPT]
        assert not listed.acknowledged and str(moved) in listed.message
    finally:
        w.close()
    assert quick_check(db) == ["ok"]
    assert moved.read_bytes() == garbage(64 * 1024)  # untouched by the fresh database


def test_a_database_that_turns_corrupt_while_running_is_set_aside_and_the_waiting_results_go_to_a_fresh_one(tmp_path):
    """Pages overwritten under the running writer: the next batch fails with "malformed", the
    file is checked, set aside and replaced, and that batch lands in the fresh file. A reader
    with its own engine (the HMI's) that had the old file open reads the fresh one next."""
    db = tmp_path / "history.db"
    w = writer_for(tmp_path, retry_backoff_s=(0.05,), reconcile_grace_s=0.0)
    reader = make_engine(f"sqlite:///{db}")
    w.start()
    try:
        for i in range(30):
            w.publish(make_inspection(i, reject=i % 3 == 0))
        assert w.flush(30) and w.stats.written == 30
        assert len(rows(reader)) == 30  # the reader's pooled connection now has the file open
        old_images = sorted((tmp_path / "images").rglob("*.png"))
        assert old_images
        con = sqlite3.connect(db)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        size = db.stat().st_size
        with open(db, "r+b") as f:
            f.seek(2 * 4096)  # header and schema page kept: the tables are still found, their pages are garbage
            f.write(garbage(size - 2 * 4096))
        spoilt = db.read_bytes()
        assert "malformed" in corruption(db)

        for i in range(30, 33):
            w.publish(make_inspection(i, reject=True))
        assert w.flush(30)
        assert (w.stats.written, w.stats.lost) == (33, 0) and w.stats.failed_attempts >= 1
        (moved,) = set_aside_copies(db)
        assert moved.read_bytes() == spoilt
        assert [r.sequence for r in rows(w.engine)] == [30, 31, 32]
        assert [r.sequence for r in rows(reader)] == [30, 31, 32]
        assert not w.alarms.is_active(ALARM_DB) and not w.alarms.is_active(ALARM_DB_CORRUPT)
        (listed,) = [a for a in w.alarms.all() if a.key == ALARM_DB_CORRUPT]
        assert str(moved) in listed.message and "malformed" in listed.message and not listed.acknowledged
        assert "station users add" in listed.message  # the users' page was overwritten too: say what to do
        w.run_maintenance(reconcile_now=True)
        assert all(p.exists() for p in old_images), "images of the set-aside database were deleted"
    finally:
        w.close()
        reader.dispose()
    assert quick_check(db) == ["ok"]


def test_a_database_file_deleted_while_running_is_created_again_and_takes_the_results(tmp_path):
    """Before, the pooled connection went on writing into the deleted file: every result after
    the deletion was lost without a word. Now the next write opens the path afresh, finds no
    tables, and the schema is created before the retry."""
    db = tmp_path / "history.db"
    w = writer_for(tmp_path, retry_backoff_s=(0.05,))
    w.start()
    try:
        for i in range(3):
            w.publish(make_inspection(i, reject=True))
        assert w.flush(30)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        for i in range(3, 6):
            w.publish(make_inspection(i, reject=True))
        assert w.flush(30)
        assert (w.stats.written, w.stats.lost) == (6, 0) and w.stats.failed_attempts >= 1
        assert not w.alarms.is_active(ALARM_DB)
    finally:
        w.close()
    engine = make_engine(f"sqlite:///{db}")
    try:
        assert [r.sequence for r in rows(engine)] == [3, 4, 5]
    finally:
        engine.dispose()


def raw_rows(db: Path, table: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
    finally:
        con.close()


def test_users_and_recipe_versions_still_readable_are_carried_over_to_the_fresh_database(tmp_path):
    """Without its users nobody could log in to the HMI after a set-aside. Here the inspections'
    pages are garbage and the users' and recipe versions' pages are not: both are copied as
    stored (password hashes, times), the inspections stay in the set-aside file."""
    from station.db.models import RecipeVersionRow, UserRow

    db = tmp_path / "history.db"
    w = writer_for(tmp_path)
    w.start()
    with Session(w.engine) as s, s.begin():
        s.add_all([UserRow(username="olga", role="operator", password_hash="$argon2id$v=19$m=65536,t=3,p=4$b2xnYQ$x"),
                   UserRow(username="emil", role="engineer", password_hash="$argon2id$v=19$m=65536,t=3,p=4$ZW1pbA$y")])
        s.add(RecipeVersionRow(name="demo-part", version=3, content_hash="ab" * 32, content="[part]\n", author="emil"))
    for i in range(60):
        w.publish(make_inspection(i, reject=i % 3 == 0))
    assert w.flush(30)
    w.close()
    users, versions = raw_rows(db, "users"), raw_rows(db, "recipe_versions")
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # every page after the schema's root pages holds rows of the growing tables (inspections, defects, images)
    first_data_page = con.execute("SELECT max(rootpage) FROM sqlite_master").fetchone()[0] + 1
    con.close()
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.seek((first_data_page - 1) * 4096)
        f.write(garbage(size - (first_data_page - 1) * 4096))
    spoilt = db.read_bytes()
    assert "malformed" in corruption(db)

    w = writer_for(tmp_path)
    w.start()
    try:
        (moved,) = set_aside_copies(db)
        assert moved.read_bytes() == spoilt
        assert raw_rows(db, "users") == users and raw_rows(db, "recipe_versions") == versions
        (alarm,) = (a for a in w.alarms.active() if a.key == ALARM_DB_CORRUPT)
        # the stored one and the demo-part recipe its 60 parts were inspected with
        assert "carried over: 2 users, 2 recipe versions" in alarm.message and "station users add" not in alarm.message
        assert alarm.count == 1  # the carry-over note amends the alarm; the file was set aside once
        assert rows(w.engine) == []
        w.publish(make_inspection(100, reject=True))
        assert w.flush(30) and [r.sequence for r in rows(w.engine)] == [100]
    finally:
        w.close()
    assert quick_check(db) == ["ok"]


def test_only_sqlites_corrupt_and_not_a_database_errors_count_as_corruption(tmp_path):
    from sqlalchemy import text
    from sqlalchemy.exc import DatabaseError

    bad = tmp_path / "bad.db"
    bad.write_bytes(garbage(8192))
    engine = make_engine(f"sqlite:///{bad}")
    try:
        with pytest.raises(DatabaseError) as wrapped, engine.connect() as conn:
            conn.execute(text("SELECT * FROM inspections"))
    finally:
        engine.dispose()
    assert says_corrupt(wrapped.value) and says_corrupt(wrapped.value.orig)
    good = tmp_path / "good.db"
    holder = sqlite3.connect(good, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError) as locked:
            sqlite3.connect(good, timeout=0.1).execute("SELECT * FROM t")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not says_corrupt(locked.value) and not says_corrupt(ValueError("malformed"))


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_a_truncated_database_is_set_aside_and_its_images_are_kept(tmp_path, fraction):
    db = write_real_history(tmp_path, 30)
    archive = tmp_path / "images"
    old_images = sorted(p for p in archive.rglob("*.png"))
    assert old_images
    with open(db, "r+b") as f:
        f.truncate(int(db.stat().st_size * fraction))
    cut = db.read_bytes()
    assert "malformed" in corruption(db)

    w = writer_for(tmp_path, reconcile_grace_s=0.0)  # any file without a row is fair game at once
    w.start()
    try:
        (moved,) = set_aside_copies(db)
        assert moved.read_bytes() == cut
        message = next(a.message for a in w.alarms.active() if a.key == ALARM_DB_CORRUPT)
        assert str(moved) in message and "malformed" in message and str(archive) in message
        for i in range(100, 103):
            w.publish(make_inspection(i, reject=True))
        assert w.flush(30) and w.stats.written == 3 and w.stats.lost == 0
        w.run_maintenance(reconcile_now=True)  # retention + reconciliation, as the writer thread runs them
        assert not w.alarms.is_active("archive_maintenance")
        assert all(p.exists() for p in old_images), "images of the set-aside database were deleted"

        # files written after the set-aside are the fresh database's: a crash's orphan still goes
        stray = archive / "2000" / "01" / "01" / "st-1" / "stray.png"
        stray.parent.mkdir(parents=True)
        stray.write_bytes(b"png")
        later = time.time() + 2.0  # the set-aside time is kept to the second
        os.utime(stray, (later, later))
        rep = reconcile(w.engine, ImageArchive(archive), "st-1", grace_s=0.0, now_s=later + 1.0)
        assert rep.orphan_files_removed == ["2000/01/01/st-1/stray.png"] and not stray.exists()
        assert sorted(rep.kept_set_aside) == sorted(p.relative_to(archive).as_posix() for p in old_images)
        assert all(p.exists() for p in old_images)
        new_rows = rows(w.engine)
        assert [r.sequence for r in new_rows] == [100, 101, 102]
        assert all((archive / img.path).exists() for r in new_rows for img in r.images)
    finally:
        w.close()
    assert quick_check(db) == ["ok"]

    # once the set-aside file is dealt with (merged or deleted), its images are ordinary orphans
    moved.unlink()
    engine = make_engine(f"sqlite:///{db}")
    try:
        rep = reconcile(engine, ImageArchive(archive), "st-1", grace_s=0.0, dry_run=True)
        assert sorted(rep.orphan_files_removed) == sorted(p.relative_to(archive).as_posix() for p in old_images)
    finally:
        engine.dispose()


def test_sound_locked_empty_or_missing_files_are_left_alone(tmp_path):
    db = write_real_history(tmp_path, 6)
    assert corruption(db) is None
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        assert corruption(db, busy_timeout_s=0.2) is None  # busy is not corrupt
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert corruption(empty) is None and corruption(tmp_path / "missing.db") is None

    w = writer_for(tmp_path)
    w.start()
    try:
        assert not w.alarms.is_active(ALARM_DB_CORRUPT)
        assert len(rows(w.engine)) == 6
    finally:
        w.close()
    assert set_aside_copies(db) == [] and set_aside_before(make_engine(f"sqlite:///{db}")) is None


def test_set_aside_never_overwrites_an_earlier_copy(tmp_path):
    db = tmp_path / "history.db"
    when = dt.datetime(2026, 11, 24, 6, 30, 5, tzinfo=dt.timezone.utc)
    names = []
    for i in range(3):
        db.write_bytes(garbage(1000, seed=i))
        names.append(set_aside(db, when).name)
    assert names == ["history.db.corrupt-20261124T063005Z", "history.db.corrupt-20261124T063005Z-1",
                     "history.db.corrupt-20261124T063005Z-2"]
    assert [(tmp_path / n).read_bytes() for n in names] == [garbage(1000, seed=i) for i in range(3)]
    assert not db.exists()
    assert set_aside_before(make_engine(f"sqlite:///{db}")) == when.timestamp() + 1.0  # the end of that second


def test_station_on_a_garbage_database_keeps_inspecting_and_answers_the_plc_fail_safe(tmp_path):
    """The whole station (simulated camera, stand-in vision, real pipeline, writer and Modbus
    server) starts on a garbage file; the PLC gets a verdict for every part, PASS only for a
    part that was inspected and passed; every verdict is in the fresh database."""
    from station.app import Station
    from station.config import StationConfig
    from station.plc.registers import Out, Status
    from tests.hmi.stand import GroundTruthInspector
    from tests.plc.conftest import PlcMaster, free_port, part_id_of

    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    db = tmp_path / "var" / "station.db"
    db.parent.mkdir()
    db.write_bytes(garbage(200 * 1024))
    port = free_port()
    config = StationConfig.embedded(
        tmp_path,
        cameras=[{"type": "simulated", "name": "top", "seed": 3, "defect_rate": 0.5}],
        plc={"enabled": True, "mode": "server", "host": "127.0.0.1", "port": port},
        hmi={"enabled": False},
    )
    published = {}

    class Recorder:
        def publish(self, insp):
            published[insp.part_id] = insp

    station = Station(config, sinks=[Recorder()])
    station.pipeline.build_inspector = GroundTruthInspector

    station.start()  # no StartupError
    plc = None
    try:
        assert station.alarms.is_active(ALARM_DB_CORRUPT)
        (moved,) = set_aside_copies(db)
        assert moved.read_bytes() == garbage(200 * 1024)
        plc = PlcMaster(port)
        answers = {}
        for pid in range(9001, 9013):
            ack = plc.trigger(pid)
            assert Status(ack[Out.STATUS]) & Status.TRIGGER_ACK
            out = plc.take_result()
            answers[part_id_of(out)] = out
        assert station.history.flush(20)
        stats = station.history.stats
        assert (stats.written, stats.lost) == (12, 0)
    finally:
        if plc is not None:
            plc.close()
        station.stop()
    assert sorted(answers) == sorted(published) == list(range(9001, 9013))
    outcomes = set()
    for pid, out in answers.items():
        status, insp = Status(out[Out.STATUS]), published[pid]
        inspected_pass = insp.failure is None and insp.verdict.passed and "analyse" in insp.timings_ms
        assert bool(status & Status.PASS) == inspected_pass, (pid, status, insp.verdict, insp.failure)
        assert bool(status & Status.REJECT) != bool(status & Status.PASS)
        assert out[Out.RESULT_CODE] == (0 if inspected_pass else insp.verdict.plc_code)
        outcomes.add(insp.verdict.outcome.value)
    assert outcomes == {"pass", "reject"}, "the stand line should give both verdicts"
    engine = make_engine(f"sqlite:///{db}")
    try:
        stored = {(r.part_id, r.outcome) for r in rows(engine)}
    finally:
        engine.dispose()
    assert stored == {(pid, published[pid].verdict.outcome.value) for pid in published}
    assert quick_check(db) == ["ok"]
