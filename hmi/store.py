"""The HMI's own records in the history database: users, audit log, recipe versions, reviews.

Uses the schema of ``db.models`` through the SQLAlchemy ORM (parameterised statements only).
History queries (filters, Pareto, yield) live in ``db.queries``; this module only covers the
records the HMI creates. Times are aware UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from station.db.models import AuditLogRow, InspectionRow, RecipeVersionRow, ReviewRow, UserRow, utcnow
from station.db.recipe_versions import RecipeVersion, text_diff  # noqa: F401 (text_diff re-exported: hmi.recipe_versions)

ROLES = ("operator", "engineer", "admin")
REVIEW_LABELS = ("confirmed", "wrong")  # an engineer's judgement on the detail page; operators flag (db.labels)


class StoreError(ValueError):
    """A request the store refuses (unknown user, duplicate name, bad label...). Says why."""


def ensure_schema(engine: Engine) -> None:
    """Bring the database to the current schema: the db package's migrations when available."""
    try:
        from station.db.migrate import upgrade  # the history owner's Alembic entry point
    except ImportError:
        upgrade = None
    if upgrade is not None:
        upgrade(engine)
        return
    from station.db.models import Base

    Base.metadata.create_all(engine)


@dataclass(frozen=True)
class UserInfo:
    username: str
    role: str
    disabled: bool
    created_at: dt.datetime
    last_login_at: dt.datetime | None
    failed_logins: int
    locked_until: dt.datetime | None


def _info(row: UserRow) -> UserInfo:
    return UserInfo(row.username, row.role, row.disabled, row.created_at, row.last_login_at, row.failed_logins,
                    row.locked_until)


def _rv(row: RecipeVersionRow) -> RecipeVersion:
    return RecipeVersion(row.id, row.name, row.version, row.content, row.content_hash, row.author, row.created_at)


def immediate_engine(engine: Engine) -> Engine:
    """An engine whose SQLite transactions take the write lock at BEGIN.

    With SQLite's default deferred BEGIN, a transaction that reads and then writes fails with
    "database is locked" (and no busy wait) when the history writer commits in between. The
    HMI's read-modify-write transactions therefore begin IMMEDIATE and wait their turn.
    """
    if engine.dialect.name != "sqlite":
        return engine
    from station.db.engine import DEFAULT_BUSY_TIMEOUT_MS

    writer = create_engine(engine.url, connect_args={"timeout": DEFAULT_BUSY_TIMEOUT_MS / 1000.0})

    @event.listens_for(writer, "connect")
    def _no_driver_transactions(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        dbapi_conn.execute(f"PRAGMA busy_timeout={DEFAULT_BUSY_TIMEOUT_MS}")
        dbapi_conn.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(writer, "begin")
    def _begin_immediate(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return writer


class HmiStore:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(immediate_engine(engine), expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read transaction (it must not write: see ``write``)."""
        with self._sessions.begin() as s:
            yield s

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that may read and then write, holding SQLite's write lock from the start."""
        with self._write_sessions.begin() as s:
            yield s

    # ---- users ---------------------------------------------------------------------------
    def user_row(self, s: Session, username: str) -> UserRow | None:
        return s.scalar(select(UserRow).where(UserRow.username == username))

    def get_user(self, username: str) -> UserInfo | None:
        with self.session() as s:
            row = self.user_row(s, username)
            return _info(row) if row else None

    def users(self) -> list[UserInfo]:
        with self.session() as s:
            return [_info(r) for r in s.scalars(select(UserRow).order_by(UserRow.username))]

    def count_admins(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(UserRow).where(UserRow.role == "admin",
                                                                            UserRow.disabled.is_(False))) or 0

    def add_user(self, username: str, role: str, password_hash: str, actor: str) -> UserInfo:
        if role not in ROLES:
            raise StoreError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        try:
            with self.write() as s:
                if self.user_row(s, username) is not None:
                    raise StoreError(f"user {username!r} already exists")
                row = UserRow(username=username, role=role, password_hash=password_hash, created_at=utcnow())
                s.add(row)
                s.add(AuditLogRow(actor=actor, action="user.create", target=username, after=f"role={role}"))
                s.flush()
                return _info(row)
        except IntegrityError:
            raise StoreError(f"user {username!r} already exists") from None

    def update_user(self, username: str, actor: str, *, role: str | None = None, disabled: bool | None = None,
                    password_hash: str | None = None) -> UserInfo:
        if role is not None and role not in ROLES:
            raise StoreError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        with self.write() as s:
            row = self.user_row(s, username)
            if row is None:
                raise StoreError(f"no user {username!r}")
            before = f"role={row.role} disabled={row.disabled}"
            if role is not None:
                row.role = role
            if disabled is not None:
                row.disabled = disabled
            if password_hash is not None:
                row.password_hash = password_hash
                row.password_changed_at = utcnow()
                row.failed_logins = 0
                row.locked_until = None
            after = f"role={row.role} disabled={row.disabled}" + (" password changed" if password_hash else "")
            s.add(AuditLogRow(actor=actor, action="user.update", target=username, before=before, after=after))
            return _info(row)

    # ---- audit ---------------------------------------------------------------------------
    def audit(self, actor: str, action: str, target: str = "", before: str | None = None,
              after: str | None = None) -> None:
        with self.write() as s:
            s.add(AuditLogRow(actor=actor, action=action, target=target, before=before, after=after))

    def audit_log(self, limit: int = 200, target: str | None = None) -> list[AuditLogRow]:
        with self.session() as s:
            q = select(AuditLogRow).order_by(AuditLogRow.id.desc()).limit(limit)
            if target is not None:
                q = q.where(AuditLogRow.target == target)
            return list(s.scalars(q))

    # ---- recipe versions -----------------------------------------------------------------
    def recipe_versions(self, name: str) -> list[RecipeVersion]:
        with self.session() as s:
            rows = s.scalars(select(RecipeVersionRow).where(RecipeVersionRow.name == name)
                             .order_by(RecipeVersionRow.version.desc(), RecipeVersionRow.id.desc()))
            return [_rv(r) for r in rows]

    def recipe_version(self, name: str, version: int) -> RecipeVersion | None:
        with self.session() as s:
            row = s.scalar(select(RecipeVersionRow).where(RecipeVersionRow.name == name,
                                                          RecipeVersionRow.version == version)
                           .order_by(RecipeVersionRow.id.desc()))
            return _rv(row) if row else None

    def latest_recipe_version(self, name: str) -> int:
        with self.session() as s:
            return s.scalar(select(func.max(RecipeVersionRow.version)).where(RecipeVersionRow.name == name)) or 0

    def record_recipe_version(self, name: str, version: int, content: str, content_hash: str, author: str,
                              diff: str) -> RecipeVersion:
        """Store a recipe version and its audit entry (the diff against the previous content) together."""
        with self.write() as s:
            existing = s.scalar(select(RecipeVersionRow).where(RecipeVersionRow.name == name,
                                                               RecipeVersionRow.content_hash == content_hash))
            if existing is not None:
                raise StoreError(f"this exact content is already stored as {name} v{existing.version}")
            row = RecipeVersionRow(name=name, version=version, content=content, content_hash=content_hash,
                                   author=author, created_at=utcnow())
            s.add(row)
            s.add(AuditLogRow(actor=author, action="recipe.save", target=f"{name} v{version}", before=None,
                              after=diff))
            s.flush()
            return _rv(row)

    def ensure_recipe_version(self, name: str, version: int, content: str, content_hash: str, author: str) -> None:
        """Record a version seen on disk (e.g. the file the station started with) if not stored yet."""
        with self.write() as s:
            found = s.scalar(select(RecipeVersionRow.id).where(RecipeVersionRow.name == name,
                                                               RecipeVersionRow.content_hash == content_hash))
            if found is None:
                s.add(RecipeVersionRow(name=name, version=version, content=content, content_hash=content_hash,
                                       author=author, created_at=utcnow()))

    # ---- reviews -------------------------------------------------------------------------
    def add_review(self, inspection_id: int, label: str, comment: str, reviewer: str) -> ReviewRow:
        if label not in REVIEW_LABELS:
            raise StoreError(f"label must be one of {', '.join(REVIEW_LABELS)}")
        with self.write() as s:
            if s.get(InspectionRow, inspection_id) is None:
                raise StoreError(f"no inspection {inspection_id}")
            row = ReviewRow(inspection_id=inspection_id, label=label, comment=comment, reviewer=reviewer,
                            at=utcnow())
            s.add(row)
            s.add(AuditLogRow(actor=reviewer, action="review.add", target=f"inspection {inspection_id}",
                              after=f"{label}: {comment}"))
            s.flush()
            return row

    def reviews(self, inspection_id: int) -> list[ReviewRow]:
        with self.session() as s:
            return list(s.scalars(select(ReviewRow).where(ReviewRow.inspection_id == inspection_id)
                                  .order_by(ReviewRow.id)))
