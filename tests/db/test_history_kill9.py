"""kill -9 of a writing station at random moments, many times, on the same SQLite database.

After every kill: PRAGMA integrity_check is ok, foreign keys hold, every stored inspection
has all its defects and all its images (file present, sha256 matching) or counts them as
dropped, and nothing committed before disappears. Files written for a transaction that
never committed are orphans, which reconciliation removes; no row may point at a missing file.
Rounds: HISTORY_KILL9_ROUNDS (default 16).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from station.db.archive import ImageArchive, reconcile
from station.db.engine import make_engine

HERE = Path(__file__).resolve().parent
ROUNDS = int(os.environ.get("HISTORY_KILL9_ROUNDS", "16"))


def check_complete(db: Path, archive: Path) -> tuple[int, int]:
    """Assert the database is intact and complete; returns (inspections, defects)."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name='inspections'").fetchone():
            return 0, 0  # killed before the first migration committed: an empty, valid database
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        bad = conn.execute(
            """SELECT i.id, i.defect_count, (SELECT count(*) FROM defects d WHERE d.inspection_id = i.id),
                      i.images_dropped, (SELECT count(*) FROM images m WHERE m.inspection_id = i.id)
               FROM inspections i
               WHERE i.defect_count != (SELECT count(*) FROM defects d WHERE d.inspection_id = i.id)
                  OR i.images_dropped + (SELECT count(*) FROM images m WHERE m.inspection_id = i.id) != 3"""
        ).fetchall()
        assert bad == [], f"incomplete inspections (id, defect_count, defects, images_dropped, images): {bad[:5]}"
        for path, sha, size in conn.execute("SELECT path, sha256, bytes FROM images"):
            data = (archive / path).read_bytes()
            assert len(data) == size and hashlib.sha256(data).hexdigest() == sha, path
        n = conn.execute("SELECT count(*) FROM inspections").fetchone()[0]
        d = conn.execute("SELECT count(*) FROM defects").fetchone()[0]
    return n, d


@pytest.mark.slow
def test_kill_9_at_random_moments_never_leaves_a_broken_or_partial_history(tmp_path):
    db, archive = tmp_path / "history.db", tmp_path / "images"
    url = f"sqlite:///{db}"
    rng = random.Random(20261124)
    env = dict(os.environ, PYTHONPATH=str(HERE.parents[1]))
    last = (0, 0)
    killed_while_running = 0
    for round_ in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "history_kill9_worker.py"), url, str(archive), str(round_ + 1)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        try:
            if round_ % 4 == 0:
                time.sleep(rng.uniform(0.05, 1.0))  # anywhere in start-up, migration included
            else:
                assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
                time.sleep(rng.uniform(0.05, 0.8))
                killed_while_running += 1
            assert proc.poll() is None, f"worker exited by itself: {proc.stderr.read()}"
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        now = check_complete(db, archive)
        assert now[0] >= last[0] and now[1] >= last[1], "committed inspections disappeared"
        last = now
    assert killed_while_running and last[0] > 0, "the worker never got to write"
    # files written for transactions the kills interrupted: orphans, removed; never dangling rows
    engine = make_engine(url)
    report = reconcile(engine, ImageArchive(archive), "kill9", grace_s=0)
    engine.dispose()
    assert report.dangling_rows_removed == [] and report.mismatched == []
    check_complete(db, archive)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT count(*) FROM images").fetchone()[0]
    files = [p for p in archive.rglob("*") if p.is_file()]
    assert len(files) == rows
    print(f"{ROUNDS} kills: {last[0]} inspections, {last[1]} defects, {rows} images intact; "
          f"{len(report.orphan_files_removed)} orphan and {len(report.temp_files_removed)} temp files reconciled")
