"""Schema migrations (Alembic) run by the station at start-up and by `station db upgrade`.

A database at a revision this code does not know (written by a newer station) is refused
with ``SchemaTooNew``: writing into a schema we do not understand could lose data.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from station.db.engine import WRITE

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_KEY = 0x57A710  # PostgreSQL advisory lock: one migrator per database at a time
log = logging.getLogger("db.migrate")
# alembic logs its plugin set-up and context at INFO on every start; we log what changed
logging.getLogger("alembic").setLevel(logging.WARNING)


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer station; this one refuses to touch it."""


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The database's revision, or None for an empty (never migrated) database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_known(engine: Engine) -> str | None:
    """The current revision; raises SchemaTooNew if this code does not know it."""
    rev = current_revision(engine)
    if rev is None:
        return None
    script = ScriptDirectory.from_config(alembic_config())
    known = {s.revision for s in script.walk_revisions()}
    if rev not in known:
        raise SchemaTooNew(
            f"database {engine.url.render_as_string(hide_password=True)} is at schema revision {rev!r}, "
            f"newer than this station knows (latest here: {script.get_current_head()!r}); "
            "it was written by a newer station version: upgrade this station's software, or point it at another database"
        )
    return rev


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate to ``revision``; returns (before, after). Raises SchemaTooNew."""
    before = check_known(engine)
    cfg = alembic_config(engine)
    # one migrator at a time (the HMI and the writer may both upgrade at start-up)
    with engine.connect().execution_options(**WRITE) as conn, conn.begin():
        if conn.dialect.name == "postgresql":  # SQLite: BEGIN IMMEDIATE does it
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    after = current_revision(engine) or ""
    if after != before:
        log.info("history schema upgraded: %s -> %s", before or "empty", after)
    return before, after


def downgrade(engine: Engine, revision: str) -> None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
