"""A corrupt SQLite history file is set aside (at start-up, or when a write finds it corrupt), never deleted.

``corruption(path)`` opens the file read-only (so it neither creates nor checkpoints it) and
runs ``PRAGMA quick_check``: it returns why the file is corrupt, or None. Only SQLite's own
verdicts count as corruption (SQLITE_CORRUPT, SQLITE_NOTADB, quick_check problems); a locked,
unreadable or missing file is not, and is left to the writer's alarms and retries. ``set_aside(path)``
renames the file with its ``-wal``/``-shm``/``-journal`` companions to
``<name>.corrupt-<UTC time>`` next to it, so the quality data in it may still be recovered
(e.g. ``sqlite3 FILE .recover``), and the station can start a fresh database.

``carry_over(moved, fresh)`` then copies what the station needs to go on from the set-aside
file into the fresh one, as far as SQLite can still read it: the HMI users (or nobody could log
in until an admin adds them again) and the recipe versions (the editor's history). A table is
copied whole or not at all; the inspections stay in the set-aside file.

The archived images the old file names stay where they are. To the fresh database they are
files without rows, which reconciliation would delete; as long as a set-aside copy lies next
to the database, ``set_aside_before(engine)`` gives its time and ``db.archive.reconcile`` keeps
the files older than that (they go with the old file: delete or merge it, and they follow).

quick_check reads every page: about 0.5 s per 250 MB from the page cache, a few seconds
cold (measured on this VM with 300k inspections, 275 MB).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import os
import re
import sqlite3
from pathlib import Path

from sqlalchemy import Engine

SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26
COMPANIONS = ("-wal", "-shm", "-journal")
CARRIED_OVER = ("users", "recipe_versions")
STAMP = "%Y%m%dT%H%M%SZ"
_SET_ASIDE = re.compile(r"\.corrupt-(\d{8}T\d{6}Z)(?:-\d+)?")


def sqlite_file(engine: Engine) -> Path | None:
    """The database file of a SQLite engine; None for PostgreSQL and in-memory databases."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def corruption(path: Path, *, busy_timeout_s: float = 5.0) -> str | None:
    """Why the SQLite file ``path`` is corrupt, or None when it is sound, missing or empty, or
    cannot be checked for another reason (locked, permissions, I/O): that is not corruption."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None  # SQLite creates a database in an empty file
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=busy_timeout_s)
    except sqlite3.Error:
        return None
    try:
        rows = [str(r[0]) for r in con.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        return str(exc) if says_corrupt(exc) else None
    finally:
        con.close()
    if rows == ["ok"]:
        return None
    return "quick_check: " + "; ".join(rows[:3]) + (f" (+{len(rows) - 3} more)" if len(rows) > 3 else "")


def says_corrupt(exc: BaseException) -> bool:
    """True if ``exc`` (sqlite3's, or SQLAlchemy's wrapping it) is SQLite reporting a corrupt
    file or not a database; a locked, full or unreadable file is not."""
    code = getattr(getattr(exc, "orig", exc), "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)


def set_aside(path: Path, now: dt.datetime | None = None) -> Path:
    """Rename ``path`` and its companion files to ``<name>.corrupt-YYYYmmddTHHMMSSZ[-N]`` in the
    same directory; returns the new path of the database file. Raises OSError."""
    path = Path(path)
    stamp = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).strftime(STAMP)
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while any(Path(f"{target}{suffix}").exists() for suffix in ("",) + COMPANIONS):
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    # companions first: a WAL left behind next to a fresh database would be replayed into it
    for suffix in COMPANIONS:
        companion = Path(f"{path}{suffix}")
        if companion.exists():
            os.rename(companion, f"{target}{suffix}")
    os.rename(path, target)
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
    return target


def carry_over(moved: Path, fresh: Path, tables: tuple[str, ...] = CARRIED_OVER, *,
               busy_timeout_s: float = 5.0) -> dict[str, int | str]:
    """Copy ``tables`` from the set-aside SQLite file ``moved`` (opened read-only) into the fresh
    database ``fresh`` (schema already created): the columns both have, the stored values as
    they are, rows the fresh one lacks (same key) only. Returns per table the rows copied, or
    why none were (a table SQLite cannot read through is copied not at all)."""
    with contextlib.ExitStack() as stack:
        try:
            old = stack.enter_context(contextlib.closing(
                sqlite3.connect(f"{Path(moved).resolve().as_uri()}?mode=ro", uri=True, timeout=busy_timeout_s)))
            new = stack.enter_context(contextlib.closing(
                sqlite3.connect(Path(fresh), timeout=busy_timeout_s, isolation_level=None)))
        except sqlite3.Error as exc:
            return {table: str(exc) for table in tables}
        return {table: _copy_table(old, new, table) for table in tables}


def _copy_table(old: sqlite3.Connection, new: sqlite3.Connection, table: str) -> int | str:
    """Rows copied, or why none were."""
    try:
        theirs = {r[1] for r in old.execute(f'PRAGMA table_info("{table}")')}
        columns = [r[1] for r in new.execute(f'PRAGMA table_info("{table}")') if r[1] in theirs]
        if not columns:
            return "no such table"
        names = ", ".join(f'"{c}"' for c in columns)
        rows = old.execute(f'SELECT {names} FROM "{table}"').fetchall()  # all or nothing
        new.execute("BEGIN IMMEDIATE")
        before = new.total_changes
        with new:  # commits, or rolls back on an error
            new.executemany(f'INSERT OR IGNORE INTO "{table}" ({names}) VALUES ({", ".join("?" * len(columns))})', rows)
        return new.total_changes - before
    except sqlite3.Error as exc:
        return str(exc)


def set_aside_before(engine: Engine) -> float | None:
    """UTC epoch seconds by which the newest set-aside copy of this engine's SQLite file was
    set aside: the end of the second its name gives, so that every file written before is
    older. None if there is none (or not SQLite)."""
    path = sqlite_file(engine)
    if path is None or not path.parent.is_dir():
        return None
    times = []
    for p in path.parent.glob(f"{glob.escape(path.name)}.corrupt-*"):
        m = _SET_ASIDE.fullmatch(p.name[len(path.name):])  # the database file, not a -wal / -shm companion
        if m:
            times.append(dt.datetime.strptime(m.group(1), STAMP).replace(tzinfo=dt.timezone.utc).timestamp() + 1.0)
    return max(times, default=None)
