"""Database URL → SQLAlchemy engine.

SQLite (the default, one station): WAL journal so readers (HMI, CLI) never block the
writer, ``synchronous=NORMAL`` (in WAL a crash or ``kill -9`` never corrupts the file; a
power cut can lose the last transactions, not consistency), foreign keys on, and a busy
timeout so a briefly locked file waits instead of failing. A pooled connection whose file was
replaced under it (set aside as corrupt by the history writer, restored from a backup) is
dropped at checkout and a new one opens the file now at the path. PostgreSQL (a whole plant):
``postgresql+psycopg://user@host/db``, with pre-ping so a restarted server is reconnected.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError

DEFAULT_BUSY_TIMEOUT_MS = 5000


class DatabaseUrlError(ValueError):
    """The database URL is malformed or names an unsupported backend."""


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, or None for in-memory / non-SQLite URLs."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def make_engine(url: str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, echo: bool = False) -> Engine:
    """Engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://…``); creates a SQLite file's folder."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseUrlError(f"bad database URL {url!r}: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, echo=echo, connect_args={"timeout": busy_timeout_ms / 1000.0})
        event.listen(engine, "connect", _sqlite_pragmas(busy_timeout_ms))
        if path is not None:
            event.listen(engine, "connect", _remember_file(path))
            event.listen(engine, "checkout", _same_file(path))
        # pysqlite only opens transactions before DML, so DDL (migrations) would autocommit
        # statement by statement; take transaction control back (SQLAlchemy's documented recipe)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.get_driver_name() != "psycopg":
            raise DatabaseUrlError(f"use postgresql+psycopg:// (psycopg 3), not {parsed.drivername!r}")
        return create_engine(parsed, echo=echo, pool_pre_ping=True)
    raise DatabaseUrlError(f"unsupported database {backend!r} in {url!r}: use sqlite:/// or postgresql+psycopg://")


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _remember_file(path: Path):
    def on_connect(_dbapi_conn, record) -> None:
        record.info["file_id"] = _file_id(path)

    return on_connect


def _same_file(path: Path):
    def on_checkout(_dbapi_conn, record, _proxy) -> None:
        if record.info.get("file_id") != _file_id(path):
            # the pool drops this connection and opens a new one (SQLAlchemy's disconnect handling)
            raise DisconnectionError(f"{path} was replaced since this connection opened it")

    return on_checkout


WRITE = {"sqlite_begin": "IMMEDIATE"}  # execution options for a connection that will write


def _sqlite_begin(conn) -> None:
    # Writers take the write lock up front (BEGIN IMMEDIATE): a deferred transaction that read
    # first cannot wait for the lock (SQLITE_BUSY at once, the busy timeout does not apply).
    mode = conn.get_execution_options().get("sqlite_begin", "")
    conn.exec_driver_sql(f"BEGIN {mode}" if mode in ("IMMEDIATE", "EXCLUSIVE") else "BEGIN")


def _enter_wal(cur, busy_timeout_ms: int) -> None:
    # Switching a new file to WAL needs an exclusive lock, and SQLite answers SQLITE_BUSY at once
    # when another connection is switching it at the same moment (several processes starting
    # together: HMI, writer, a second station): retry within the busy timeout.
    deadline = time.monotonic() + busy_timeout_ms / 1000.0
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_pragmas(busy_timeout_ms: int):
    def on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # no implicit BEGIN: the "begin" event emits it
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")  # first: the pragmas below may wait for a lock
            _enter_wal(cur, busy_timeout_ms)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.execute("PRAGMA cache_size=-32000")  # KiB: 32 MB page cache per connection
        finally:
            cur.close()

    return on_connect
