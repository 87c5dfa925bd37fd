"""The history writer against real SQLite files, real PNG files and size-limited tmpfs mounts.

Disk-full is real: a tmpfs of a few hundred KiB mounted for the test (needs root / CAP_SYS_ADMIN,
which CI has; without it those two tests skip and say why).
"""

from __future__ import annotations

from dataclasses import replace

import hashlib
import os
import sqlite3
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from station.db.engine import make_engine
from station.db.migrate import upgrade
from station.db.models import DefectRow, ImageRow, InspectionRow, RecipeVersionRow
from station.db.writer import ALARM_ARCHIVE, ALARM_DB, ALARM_DB_CORRUPT, ALARM_UNRECORDED, HistoryWriter
from history_testkit import fill, make_inspection, tiny_tmpfs
from station.alarms import AlarmBoard
from station.config import ArchiveConfig, DatabaseConfig
from station.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]


def recipe_with(sample_rate: float):
    text = (REPO / "recipes" / "demo-part.toml").read_text().replace("pass_sample_rate = 0.05", f"pass_sample_rate = {sample_rate}")
    assert f"pass_sample_rate = {sample_rate}" in text
    return load_recipe(REPO / "recipes" / "demo-part.toml", text=text)


def writer_for(tmp_path, *, url=None, queue_size=10_000, batch_size=200, engine=None, archive_dir=None,
               on_history_full="stop", journal_dir=None, **kw):
    url = url or f"sqlite:///{tmp_path / 'history.db'}"
    return HistoryWriter(
        DatabaseConfig(url=url, queue_size=queue_size, batch_size=batch_size, on_history_full=on_history_full,
                       journal_dir=journal_dir),
        ArchiveConfig(dir=archive_dir or tmp_path / "images"),
        AlarmBoard(),
        "st-1",
        engine=engine,
        **kw,
    )


def rows(engine):
    with Session(engine) as s:
        return s.scalars(
            select(InspectionRow).options(selectinload(InspectionRow.defects), selectinload(InspectionRow.images)).order_by(InspectionRow.id)
        ).all()


def test_every_result_is_stored_with_defects_images_and_its_recipe(tmp_path):
    loaded = recipe_with(0.25)
    w = writer_for(tmp_path, batch_size=16)
    w.start()
    sent = [make_inspection(i, reject=i % 6 == 0, recipe=loaded) for i in range(120)]
    for insp in sent:
        w.publish(insp)
    assert w.flush(30)
    w.close()
    stored = rows(w.engine)
    assert len(stored) == 120 and w.stats.written == 120 and w.stats.lost == 0
    passes_with_images = 0
    for insp, row in zip(sent, stored):
        assert (row.sequence, row.outcome, len(row.defects), row.defect_count) == (
            insp.sequence, insp.verdict.outcome.value, len(insp.defects), len(insp.defects))
        assert row.thresholds["stain"]["min_area_mm2"] == 0.5
        if insp.verdict.passed:
            passes_with_images += bool(row.images)
        else:
            assert {(i.kind, i.view) for i in row.images} == {("raw", "top"), ("overlay", "top")}
        for img in row.images:
            data = (tmp_path / "images" / img.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == img.sha256 and len(data) == img.bytes
            decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            original = insp.views[0].image if img.kind == "raw" else insp.overlay
            assert np.array_equal(decoded, original)
    assert passes_with_images == 100 // 4  # exactly the sampled share of the 100 passes
    with Session(w.engine) as s:
        versions = s.scalars(select(RecipeVersionRow)).all()
    assert [(v.name, v.content_hash, v.content) for v in versions] == [("demo-part", loaded.content_hash, loaded.text)]
    w.engine.dispose()


def test_each_row_keeps_the_thresholds_and_hash_of_the_recipe_its_part_was_inspected_with(tmp_path):
    """A recipe reloaded between two parts: each row has its own part's recipe (version, hash and
    thresholds), never the one running when the writer gets to it."""
    text = (REPO / "recipes" / "demo-part.toml").read_text()
    v1 = load_recipe(REPO / "recipes" / "demo-part.toml", text=text)
    v2 = load_recipe(REPO / "recipes" / "demo-part.toml",
                     text=text.replace("version = 1", "version = 2").replace("min_confidence = 0.5", "min_confidence = 0.8"))
    w = writer_for(tmp_path)
    w.start()
    w.publish(make_inspection(1, reject=True, recipe=v1))
    w.publish(make_inspection(2, reject=True, recipe=v2))
    w.publish(make_inspection(3, reject=True, recipe=v1))  # a part still in flight from before the reload
    assert w.flush(30)
    w.close()
    stored = rows(w.engine)
    assert [(r.recipe_version, r.recipe_hash, r.thresholds["scratch"]["min_confidence"]) for r in stored] == [
        (1, v1.content_hash, 0.5), (2, v2.content_hash, 0.8), (1, v1.content_hash, 0.5)]
    with Session(w.engine) as s:
        versions = {(v.version, v.content_hash) for v in s.scalars(select(RecipeVersionRow))}
    assert versions == {(1, v1.content_hash), (2, v2.content_hash)}
    w.engine.dispose()


def test_locked_database_raises_an_alarm_holds_results_and_counts_overflow(tmp_path):
    """on_history_full = "continue": past the backlog bound verdicts are counted as unrecorded."""
    path = tmp_path / "history.db"
    engine = make_engine(f"sqlite:///{path}", busy_timeout_ms=100)
    w = writer_for(tmp_path, engine=engine, queue_size=10, batch_size=5, retry_backoff_s=(0.05,), on_history_full="continue")
    w.start()
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        slowest = 0.0
        for i in range(40):
            t = time.perf_counter()
            w.publish(make_inspection(i, reject=i % 2 == 0))
            slowest = max(slowest, time.perf_counter() - t)
        assert slowest < 0.5, "publish blocked on the locked database"
        deadline = time.monotonic() + 10
        while not w.alarms.is_active(ALARM_DB) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert w.alarms.is_active(ALARM_DB)
        assert "locked" in next(a.message for a in w.alarms.active() if a.key == ALARM_DB)
        assert w.stats.lost == w.stats.unrecorded == 40 - 10  # the backlog (10) is held
        assert f"{w.stats.unrecorded} verdicts given without a record" in next(
            a.message for a in w.alarms.all() if a.key == ALARM_UNRECORDED)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert w.flush(30)
    w.close()
    stored = rows(engine)
    assert len(stored) == w.stats.written == 40 - w.stats.lost
    assert all(len(r.defects) == r.defect_count for r in stored)
    assert not w.alarms.is_active(ALARM_DB)
    engine.dispose()


def test_corrupt_database_is_an_alarm_not_a_crash(tmp_path):
    """A file corrupt at start-up is set aside and replaced (test_history_corrupt.py). One that
    cannot be moved is left exactly as it is, and results wait under an alarm as for any broken
    database. Here the rename really fails: with 240 characters the name still fits NAME_MAX
    with SQLite's "-wal", but not with ".corrupt-<time>"."""
    path = tmp_path / ("h" * 237 + ".db")
    data = os.urandom(64 * 1024)
    path.write_bytes(data)
    w = writer_for(tmp_path, url=f"sqlite:///{path}", retry_backoff_s=(0.05,))
    w.start()  # must not raise: the station keeps inspecting
    for i in range(5):
        w.publish(make_inspection(i, reject=True))
    assert {ALARM_DB, ALARM_DB_CORRUPT} <= {a.key for a in w.alarms.active()}
    assert "database" in next(a.message for a in w.alarms.active() if a.key == ALARM_DB)
    assert "could not be moved aside" in next(a.message for a in w.alarms.active() if a.key == ALARM_DB_CORRUPT)
    assert not w.flush(0.5)
    w.close(timeout=1)
    assert w.stats.written == 0 and w.stats.lost == 5
    assert path.read_bytes() == data and [p.name for p in tmp_path.iterdir() if p.name != "images"] == [path.name]


def test_queued_image_memory_is_bounded(tmp_path):
    w = writer_for(tmp_path, max_queued_image_bytes=20_000)  # one reject's raw + overlay (2 x 9216 bytes)
    for i in range(4):
        w.publish(make_inspection(i, reject=True))
    w.start()
    assert w.flush(10)
    w.close()
    stored = rows(w.engine)
    assert [len(r.images) for r in stored] == [2, 0, 0, 0]
    assert [r.images_dropped for r in stored] == [0, 2, 2, 2]
    assert w.stats.images_dropped == 6  # counted where doctor and the HMI read it, like a failed write
    assert [len(r.defects) for r in stored] == [3, 3, 3, 3]


# ---- disk full (real, on a tiny tmpfs) ------------------------------------------------------------
def test_database_disk_full_raises_an_alarm_and_recovers_when_space_returns(tmp_path):
    with tiny_tmpfs(tmp_path / "dbfs", 1024) as fs:
        url = f"sqlite:///{fs / 'history.db'}"
        w = writer_for(tmp_path, url=url, queue_size=200, batch_size=50, retry_backoff_s=(0.05,))
        w.start()
        filler = fill(fs)
        for i in range(150):
            w.publish(make_inspection(i, reject=True, n_defects=3))
        deadline = time.monotonic() + 15
        while not w.alarms.is_active(ALARM_DB) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert w.alarms.is_active(ALARM_DB), "no alarm while the database disk is full"
        assert "full" in next(a.message for a in w.alarms.active() if a.key == ALARM_DB)
        filler.unlink()
        assert w.flush(30)
        w.close()
        assert not w.alarms.is_active(ALARM_DB)
        engine = make_engine(url)
        stored = rows(engine)
        assert len(stored) == 150 - w.stats.lost == w.stats.written
        assert all(len(r.defects) == r.defect_count == 3 for r in stored)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        engine.dispose()


def test_archive_disk_full_drops_images_counts_them_and_keeps_every_inspection(tmp_path):
    with tiny_tmpfs(tmp_path / "imgfs", 256) as fs:
        w = writer_for(tmp_path, archive_dir=fs / "images")
        w.start()
        rng = np.random.default_rng(1)
        sent = []
        for i in range(60):
            insp = make_inspection(i, reject=True, size=(64, 96))
            insp.views[0] = type(insp.views[0])("top", rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))  # incompressible
            insp.overlay = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
            sent.append(insp)
            w.publish(insp)
        assert w.flush(30)
        assert w.alarms.is_active(ALARM_ARCHIVE)
        assert "No space left" in next(a.message for a in w.alarms.active() if a.key == ALARM_ARCHIVE)
        w.close()
        stored = rows(w.engine)
        assert len(stored) == 60
        assert all(len(r.images) + r.images_dropped == 2 and len(r.defects) == 3 for r in stored)
        assert sum(r.images_dropped for r in stored) == w.stats.images_dropped > 0
        assert sum(len(r.images) for r in stored) == w.stats.images_written > 0
        for r in stored:
            for img in r.images:
                assert (fs / "images" / img.path).stat().st_size == img.bytes
        leftovers = [p for p in (fs / "images").rglob("*.tmp")]
        assert leftovers == []
        with w.engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(ImageRow)) == w.stats.images_written
            assert conn.scalar(select(func.count()).select_from(DefectRow)) == 180
        w.engine.dispose()


def test_schema_is_migrated_on_start(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    w = writer_for(tmp_path, url=url)
    w.start()
    w.publish(make_inspection(1, reject=False))
    assert w.flush(10)
    w.close()
    engine = make_engine(url)
    assert upgrade(engine)[0] == "0002"  # already at head: start() migrated it
    engine.dispose()


# ---- hostile results and an unreachable server (SQLite and PostgreSQL) -----------------------------
def test_nan_scores_and_overlong_names_are_stored_not_lost(db_url, tmp_path):
    w = writer_for(tmp_path, url=db_url)
    w.start()
    insp = make_inspection(1, reject=True)
    insp.scores.update({"nan": float("nan"), "inf": float("inf"), "np": np.float32(0.5)})
    insp.defects[0] = replace(insp.defects[0], class_name="x" * 100)
    insp.defects[1] = replace(insp.defects[1], confidence=float("nan"))
    w.publish(insp)
    assert w.flush(20)
    w.close()
    (row,) = rows(w.engine)
    assert row.scores["nan"] is None and row.scores["inf"] is None and row.scores["np"] == 0.5
    assert len(row.defects) == 3 and row.defects[0].class_name == "x" * 63 + "…" and row.defects[1].confidence == 0.0
    w.engine.dispose()


def test_a_result_the_database_refuses_is_dropped_alone_and_counted(db_url, tmp_path):
    w = writer_for(tmp_path, url=db_url, batch_size=50)
    for i in range(10):
        w.publish(make_inspection(i, reject=i % 2 == 0, part_id=2**70 if i == 4 else None))  # beyond BIGINT
    w.start()
    assert w.flush(20)
    w.close()
    assert sorted(r.sequence for r in rows(w.engine)) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert w.stats.lost == 1 and w.stats.written == 9
    from station.db.writer import ALARM_BAD_RESULT

    assert "seq 4" in next(a.message for a in w.alarms.all() if a.key == ALARM_BAD_RESULT)
    w.engine.dispose()


@pytest.mark.postgres
def test_postgres_unreachable_at_start_then_back(pg_server, tmp_path):
    import uuid

    import psycopg

    name = "late_" + uuid.uuid4().hex[:10]
    w = writer_for(tmp_path, url=f"{pg_server}/{name}", retry_backoff_s=(0.1,))
    w.start()  # the database does not exist yet: an alarm, not a crash
    assert w.alarms.is_active(ALARM_DB) and "cannot open or migrate" in next(a.message for a in w.alarms.active())
    for i in range(5):
        w.publish(make_inspection(i, reject=True))
    with psycopg.connect(pg_server.replace("postgresql+psycopg://", "postgresql://") + "/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    assert w.flush(30)
    w.close()
    assert not w.alarms.is_active(ALARM_DB)
    assert [len(r.defects) for r in rows(w.engine)] == [3] * 5
    w.engine.dispose()
    with psycopg.connect(pg_server.replace("postgresql+psycopg://", "postgresql://") + "/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_queued_results_do_not_hold_full_frame_masks(tmp_path):
    import gc
    import weakref

    w = writer_for(tmp_path)
    insp = make_inspection(1, reject=True, size=(1000, 1000))
    insp.views, insp.overlay = [], None
    refs = [weakref.ref(d.mask) for d in insp.defects]
    w.publish(insp)  # queued, not written: the writer is not started
    del insp
    gc.collect()
    assert all(r() is None for r in refs), "the queue keeps 1 MB masks alive"
    w.start()
    assert w.flush(10)
    w.close()
    (row,) = rows(w.engine)
    assert all(d.mask_rle for d in row.defects)


def test_a_bug_in_the_writer_loses_one_batch_counted_and_the_writer_goes_on(tmp_path, monkeypatch):
    w = writer_for(tmp_path, batch_size=5)
    real = HistoryWriter._prepare
    calls = {"n": 0}

    def buggy(self, p):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("bug while preparing")
        return real(self, p)

    monkeypatch.setattr(HistoryWriter, "_prepare", buggy)
    for i in range(5):
        w.publish(make_inspection(i, reject=False))
    w.start()
    assert w.flush(10)  # settled: the batch is counted lost, flush does not hang
    for i in range(5, 8):
        w.publish(make_inspection(i, reject=False))
    assert w.flush(10)
    w.close()
    assert w.stats.lost == 5 and w.stats.written == 3
    assert "5 results lost" in next(a.message for a in w.alarms.all() if a.key == ALARM_DB)
    assert sorted(r.sequence for r in rows(w.engine)) == [5, 6, 7]


def test_an_unexpected_insert_error_is_narrowed_to_the_result_that_causes_it(tmp_path, monkeypatch):
    w = writer_for(tmp_path, batch_size=10)
    real = HistoryWriter._insert

    def picky(self, batch):
        if any(p.row["sequence"] == 3 for p in batch):
            raise RuntimeError("cannot store seq 3")
        return real(self, batch)

    monkeypatch.setattr(HistoryWriter, "_insert", picky)
    for i in range(8):
        w.publish(make_inspection(i, reject=False))
    w.start()
    assert w.flush(10)
    w.close()
    assert sorted(r.sequence for r in rows(w.engine)) == [0, 1, 2, 4, 5, 6, 7]
    assert w.stats.lost == 1
