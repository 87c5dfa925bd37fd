"""Schema and migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session

from station.db import rle
from station.db.engine import DatabaseUrlError, make_engine
from station.db.migrate import SchemaTooNew, current_revision, downgrade, head_revision, upgrade
from station.db.models import Base, DefectRow, ImageRow, InspectionRow
from station.alarms import AlarmBoard
from station.config import ArchiveConfig, DatabaseConfig

TABLES = {"inspections", "defects", "images", "recipe_versions", "audit_log", "users", "reviews"}


def test_upgrade_builds_the_schema_the_models_describe(db_url):
    engine = make_engine(db_url)
    assert current_revision(engine) is None
    before, after = upgrade(engine)
    assert (before, after) == (None, head_revision())
    assert TABLES <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == [], f"models and migrations differ: {diff}"
    # idempotent, and reversible
    assert upgrade(engine) == (head_revision(), head_revision())
    downgrade(engine, "base")
    assert not (TABLES & set(inspect(engine).get_table_names()))
    upgrade(engine)
    assert TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_indexes_for_common_filters_exist(migrated):
    names = {ix["name"] for ix in inspect(migrated).get_indexes("inspections")}
    assert {"ix_inspections_time_outcome", "ix_inspections_recipe_time", "ix_inspections_outcome_time", "ix_inspections_part_id"} <= names
    names = {ix["name"] for ix in inspect(migrated).get_indexes("defects")}
    assert {"ix_defects_class_time", "ix_defects_inspection_id", "ix_defects_time_class"} <= names


def test_database_from_a_newer_station_is_refused_with_the_reason(db_url, tmp_path):
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    from station.db.migrate import head_revision

    with pytest.raises(SchemaTooNew, match=rf"9999_future.*newer than this station knows.*{head_revision()}"):
        upgrade(engine)
    alarms = AlarmBoard()
    from station.db.writer import ALARM_DB, HistoryWriter

    writer = HistoryWriter(DatabaseConfig(url=db_url), ArchiveConfig(dir=tmp_path / "img"), alarms, "s1", engine=engine)
    with pytest.raises(SchemaTooNew):
        writer.start()
    assert alarms.is_active(ALARM_DB)
    assert "newer" in [a for a in alarms.active() if a.key == ALARM_DB][0].message
    engine.dispose()


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'h.db'}")
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    engine.dispose()


def test_sqlite_ddl_is_transactional(tmp_path):
    """A migration that fails half-way must leave no half-built schema behind."""
    engine = make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE half_done (a INTEGER)"))
            raise RuntimeError("crash in the middle of a migration")
    assert "half_done" not in inspect(engine).get_table_names()
    engine.dispose()


def test_deleting_an_inspection_deletes_its_defects_and_images(migrated):
    t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    with Session(migrated) as s:
        row = InspectionRow(station_id="s", sequence=1, part_id=1, triggered_at=t, recipe_name="r", recipe_version=1, outcome="reject")
        row.defects = [DefectRow(triggered_at=t, view="top", class_name="c", confidence=1, x0=0, y0=0, x1=1, y1=1, area_px=1)]
        row.images = [ImageRow(view="top", kind="raw", path="a.png", sha256="0" * 64, bytes=1, created_at=t)]
        s.add(row)
        s.commit()
        s.delete(row)
        s.commit()
        assert s.scalar(select(DefectRow.id)) is None and s.scalar(select(ImageRow.id)) is None


def test_times_are_stored_as_utc_and_naive_times_are_refused(migrated):
    berlin = dt.timezone(dt.timedelta(hours=1))
    with Session(migrated) as s:
        s.add(InspectionRow(station_id="s", sequence=1, part_id=1, triggered_at=dt.datetime(2026, 1, 1, 7, 0, tzinfo=berlin),
                            recipe_name="r", recipe_version=1, outcome="pass"))
        s.commit()
        got = s.scalar(select(InspectionRow.triggered_at))
        assert got == dt.datetime(2026, 1, 1, 6, 0, tzinfo=dt.timezone.utc) and got.tzinfo is not None
        s.add(InspectionRow(station_id="s", sequence=2, part_id=1, triggered_at=dt.datetime(2026, 1, 1),
                            recipe_name="r", recipe_version=1, outcome="pass"))
        with pytest.raises(Exception, match="naive datetime"):
            s.commit()


@pytest.mark.parametrize("url,reason", [
    ("mysql://x/y", "unsupported database"),
    ("postgresql+psycopg2://u@h/db", "postgresql\\+psycopg"),
    ("not a url", "bad database URL"),
])
def test_bad_database_urls_are_clear_errors(url, reason):
    with pytest.raises(DatabaseUrlError, match=reason):
        make_engine(url)


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 40), st.integers(1, 40))), st.data())
def test_mask_rle_round_trips(mask, data):
    h, w = mask.shape
    x0 = data.draw(st.integers(0, w - 1))
    y0 = data.draw(st.integers(0, h - 1))
    x1 = data.draw(st.integers(x0 + 1, w))
    y1 = data.draw(st.integers(y0 + 1, h))
    text_ = rle.encode(mask, (x0, y0, x1, y1))
    assert np.array_equal(rle.decode(text_), mask[y0:y1, x0:x1])
    pasted = rle.paste(text_, (x0, y0, x1, y1), mask.shape)
    assert np.array_equal(pasted[y0:y1, x0:x1], mask[y0:y1, x0:x1]) and not pasted.sum() > mask.sum()
    assert np.array_equal(rle.decode(rle.encode(mask)), mask)


def test_malformed_rle_is_an_error():
    with pytest.raises(ValueError, match="sum"):
        rle.decode("2 2 0 1 1")


def test_concurrent_start_ups_migrate_once_without_errors(db_url):
    """The HMI and the writer (or several stations on one PostgreSQL) may upgrade at the same time."""
    import threading

    errors, engines = [], [make_engine(db_url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))

    def start(engine):
        barrier.wait()
        try:
            upgrade(engine)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(repr(exc))

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert current_revision(engines[0]) == head_revision()
    for e in engines:
        e.dispose()


def test_every_db_folder_with_python_files_is_a_package():
    """setuptools only installs packages: a folder without __init__.py (e.g. migrations/versions)
    would be missing from an installed station, which could then not migrate."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "db"
    missing = [str(d) for d in [root, *root.rglob("*")] if d.is_dir() and "__pycache__" not in d.parts
               and any(d.glob("*.py")) and not (d / "__init__.py").exists()]
    assert missing == []
