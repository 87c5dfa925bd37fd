"""Image archive retention (days, bytes, minimum age) and files↔rows reconciliation, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from station.db.archive import ImageArchive, apply_retention, reconcile
from station.db.models import ImageRow, InspectionRow
from station.db.writer import ALARM_ARCHIVE_FULL, HistoryWriter
from history_testkit import make_inspection
from station.alarms import AlarmBoard
from station.config import ArchiveConfig, DatabaseConfig

NOW = dt.datetime.now(dt.timezone.utc)
AGES_DAYS = [100, 50, 20, 10, 3, 1]


def populate(engine, directory, station="st-1", ages=AGES_DAYS, seq0=0) -> HistoryWriter:
    """One reject (raw + overlay image) per age; the writer itself keeps everything."""
    w = HistoryWriter(DatabaseConfig(url=str(engine.url)), ArchiveConfig(dir=directory, retention_days=10_000, min_age_days=0),
                      AlarmBoard(), station, engine=engine)
    w.start()
    for k, age in enumerate(ages):
        w.publish(make_inspection(seq0 + k, reject=True, when=NOW - dt.timedelta(days=age)))
    assert w.flush(20)
    w.close()
    return w


def images_by_age(engine, station="st-1") -> dict[int, list[ImageRow]]:
    with Session(engine) as s:
        rows = s.scalars(select(InspectionRow).where(InspectionRow.station_id == station).options(selectinload(InspectionRow.images))).all()
        return {round((NOW - r.triggered_at).total_seconds() / 86400): list(r.images) for r in rows}


def files(directory) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def test_retention_by_days_deletes_old_images_only(migrated, tmp_path):
    populate(migrated, tmp_path / "img")
    rep = apply_retention(migrated, ImageArchive(tmp_path / "img"), ArchiveConfig(dir=tmp_path / "img", retention_days=30, min_age_days=7), "st-1", now=NOW)
    kept = images_by_age(migrated)
    assert {age: len(imgs) for age, imgs in kept.items()} == {100: 0, 50: 0, 20: 2, 10: 2, 3: 2, 1: 2}  # inspections stay
    assert rep.deleted_files == 4
    assert files(tmp_path / "img") == {i.path for imgs in kept.values() for i in imgs}


def test_minimum_age_wins_over_a_shorter_retention(migrated, tmp_path):
    populate(migrated, tmp_path / "img")
    apply_retention(migrated, ImageArchive(tmp_path / "img"), ArchiveConfig(dir=tmp_path / "img", retention_days=2, min_age_days=7), "st-1", now=NOW)
    assert {age: len(imgs) for age, imgs in images_by_age(migrated).items()} == {100: 0, 50: 0, 20: 0, 10: 0, 3: 2, 1: 2}


def test_retention_by_bytes_deletes_oldest_first(migrated, tmp_path):
    populate(migrated, tmp_path / "img")
    before = images_by_age(migrated)
    newest_three = sum(i.bytes for age in (10, 3, 1) for i in before[age])
    cfg = ArchiveConfig(dir=tmp_path / "img", retention_days=3650, max_bytes=newest_three, min_age_days=0)
    rep = apply_retention(migrated, ImageArchive(tmp_path / "img"), cfg, "st-1", now=NOW)
    after = images_by_age(migrated)
    assert {age: len(imgs) for age, imgs in after.items()} == {100: 0, 50: 0, 20: 0, 10: 2, 3: 2, 1: 2}
    assert rep.total_bytes_after == newest_three and not rep.over_budget_young
    assert files(tmp_path / "img") == {i.path for imgs in after.values() for i in imgs}


def test_bytes_budget_never_deletes_young_images_and_alarms(migrated, tmp_path):
    w = populate(migrated, tmp_path / "img")
    cfg = ArchiveConfig(dir=tmp_path / "img", retention_days=3650, max_bytes=1, min_age_days=7)
    rep = apply_retention(migrated, ImageArchive(tmp_path / "img"), cfg, "st-1", now=NOW)
    assert rep.over_budget_young
    assert {age: len(imgs) for age, imgs in images_by_age(migrated).items()} == {100: 0, 50: 0, 20: 0, 10: 0, 3: 2, 1: 2}
    w2 = HistoryWriter(DatabaseConfig(url=str(migrated.url)), cfg, AlarmBoard(), "st-1", engine=migrated)
    w2.run_maintenance()
    assert w2.alarms.is_active(ALARM_ARCHIVE_FULL)
    assert w.stats.images_written == 12


def test_retention_and_reconcile_touch_only_this_stations_images(migrated, tmp_path):
    populate(migrated, tmp_path / "a", station="st-a")
    populate(migrated, tmp_path / "b", station="st-b", seq0=100)
    apply_retention(migrated, ImageArchive(tmp_path / "a"), ArchiveConfig(dir=tmp_path / "a", retention_days=0.5, min_age_days=0), "st-a", now=NOW)
    assert sum(len(v) for v in images_by_age(migrated, "st-a").values()) == 0
    assert sum(len(v) for v in images_by_age(migrated, "st-b").values()) == 12
    # station a's archive directory does not hold b's files: b's rows are not "dangling" for a
    rep = reconcile(migrated, ImageArchive(tmp_path / "a"), "st-a", grace_s=0)
    assert rep.clean
    assert sum(len(v) for v in images_by_age(migrated, "st-b").values()) == 12


def test_reconcile_fixes_both_directions_and_reports_mismatches(migrated, tmp_path):
    d = tmp_path / "img"
    populate(migrated, d)
    archive = ImageArchive(d)
    rows = {i.path: i for imgs in images_by_age(migrated).values() for i in imgs}
    paths = sorted(rows)
    old = time.time() - 3600
    (d / "2020/01/01/st-1").mkdir(parents=True)
    orphan_old = d / "2020/01/01/st-1/orphan.png"
    orphan_old.write_bytes(b"x" * 10)
    os.utime(orphan_old, (old, old))
    orphan_young = d / "2020/01/01/st-1/young.png"  # maybe its row is about to be committed
    orphan_young.write_bytes(b"y")
    temp = d / "2020/01/01/st-1/half.png.tmp"
    temp.write_bytes(b"z")
    os.utime(temp, (old, old))
    (d / paths[0]).unlink()  # row without file
    (d / paths[1]).write_bytes(b"truncated")  # size differs
    data = bytearray((d / paths[2]).read_bytes())
    data[-20] ^= 0xFF
    (d / paths[2]).write_bytes(bytes(data))  # same size, other content: only verify sees it

    dry = reconcile(migrated, archive, "st-1", grace_s=60, dry_run=True, verify=True)
    assert dry.orphan_files_removed == ["2020/01/01/st-1/orphan.png"]
    assert dry.temp_files_removed == ["2020/01/01/st-1/half.png.tmp"]
    assert dry.dangling_rows_removed == [paths[0]]
    assert sorted(dry.mismatched) == sorted([paths[1], paths[2]])
    assert orphan_old.exists() and temp.exists()

    rep = reconcile(migrated, archive, "st-1", grace_s=60)
    assert rep.orphan_files_removed == ["2020/01/01/st-1/orphan.png"] and rep.mismatched == [paths[1]]
    assert not orphan_old.exists() and not temp.exists() and orphan_young.exists()
    assert (d / paths[1]).exists()  # mismatched files are kept for a human to look at
    with Session(migrated) as s:
        left = set(s.scalars(select(ImageRow.path)))
    assert paths[0] not in left and paths[1] in left
    again = reconcile(migrated, archive, "st-1", grace_s=60)
    assert not again.orphan_files_removed and not again.dangling_rows_removed and again.mismatched == [paths[1]]


def test_archive_paths_cannot_escape_the_archive(tmp_path):
    a = ImageArchive(tmp_path / "img")
    rel = a.relative_path(NOW, "../../etc", 1, "../top/..", "raw/../../x")
    assert ".." not in rel.split("/") and not rel.startswith("/")
    assert (tmp_path / "img" / rel).resolve().is_relative_to((tmp_path / "img").resolve())


def test_archive_refuses_non_uint8_images(tmp_path):
    import numpy as np

    with pytest.raises(ValueError, match="uint8"):
        ImageArchive(tmp_path).encode(np.zeros((4, 4), np.float32))


def test_the_writer_applies_retention_and_reconciles_by_itself(migrated, tmp_path):
    d = tmp_path / "img"
    orphan = d / "2020" / "orphan.png"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"x")
    os.utime(orphan, (1, 1))
    cfg = ArchiveConfig(dir=d, retention_days=30, min_age_days=7)
    w = HistoryWriter(DatabaseConfig(url=str(migrated.url)), cfg, AlarmBoard(), "st-1", engine=migrated,
                      maintenance_interval_s=0.2, reconcile_grace_s=60)
    w.start()
    for k, age in enumerate([100, 1]):
        w.publish(make_inspection(k, reject=True, when=NOW - dt.timedelta(days=age)))
    assert w.flush(10)
    deadline = time.monotonic() + 10
    while (orphan.exists() or images_by_age(migrated)[100]) and time.monotonic() < deadline:
        time.sleep(0.1)
    w.close()
    assert not orphan.exists()
    assert {age: len(imgs) for age, imgs in images_by_age(migrated).items()} == {100: 0, 1: 2}
    assert files(d) == {i.path for i in images_by_age(migrated)[1]}
