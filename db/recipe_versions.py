"""Stored recipe versions outside the HMI: candidates written by `station train --from-history`,
and the validations that compare a candidate with the version it would replace.

A candidate is a row of ``recipe_versions`` like any version saved in the HMI's editor (the
HMI lists it and can activate it); it never touches the recipes directory, so the line runs
what it ran. Each write is one transaction with its audit entry.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, insert, select

from station.db.engine import WRITE
from station.db.models import AuditLogRow, RecipeValidationRow, RecipeVersionRow, utcnow

V = RecipeVersionRow.__table__.c
VAL = RecipeValidationRow.__table__.c


def text_diff(before: str, after: str, name: str = "recipe") -> str:
    """Unified diff of two texts (empty when equal)."""
    return "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), f"{name} (before)",
                                        f"{name} (after)"))


class VersionExists(ValueError):
    """This exact recipe content is already stored."""


@dataclass(frozen=True)
class RecipeVersion:
    """A stored recipe version (a row of ``recipe_versions``)."""

    id: int
    name: str
    version: int
    content: str
    content_hash: str
    author: str
    created_at: dt.datetime


@dataclass(frozen=True)
class Validation:
    id: int
    name: str
    candidate_version: int
    candidate_hash: str
    baseline_version: int | None
    baseline_hash: str | None
    parts: int
    actor: str
    at: dt.datetime
    report: dict[str, Any]


class RecipeVersions:
    def __init__(self, engine: Engine):
        self.engine = engine

    def latest_version(self, name: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.max(V.version)).where(V.name == name)) or 0)

    def get(self, name: str, version: int) -> RecipeVersion | None:
        """The newest stored row of ``name`` version ``version``, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(V.id, V.name, V.version, V.content, V.content_hash, V.author, V.created_at)
                               .where(V.name == name, V.version == version).order_by(V.id.desc())).first()
        return None if row is None else RecipeVersion(*row)

    def record_candidate(self, name: str, version: int, text: str, author: str, base_text: str, note: str = "") -> RecipeVersion:
        """Store ``text`` as version ``version`` of ``name`` with an audit entry "recipe.candidate"
        (the diff against ``base_text``, and ``note``). Raises VersionExists for content already stored."""
        digest = hashlib.sha256(text.encode()).hexdigest()
        now = utcnow()
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            found = conn.scalar(select(V.version).where(V.name == name, V.content_hash == digest))
            if found is not None:
                raise VersionExists(f"this exact content is already stored as {name} v{found}")
            vid = conn.execute(insert(RecipeVersionRow.__table__).values(
                name=name, version=version, content=text, content_hash=digest, author=author, created_at=now).returning(V.id)).scalar_one()
            after = (note + "\n" if note else "") + text_diff(base_text, text, name)
            conn.execute(insert(AuditLogRow.__table__).values(actor=author, action="recipe.candidate", target=f"{name} v{version}",
                                                              at=now, after=after))
        return RecipeVersion(int(vid), name, version, text, digest, author, now)

    def record_validation(self, name: str, candidate: tuple[int, str], baseline: tuple[int, str] | None, parts: int,
                          actor: str, report: dict[str, Any]) -> int:
        """Store a validation report (audited as "recipe.validate"); returns its id."""
        now = utcnow()
        summary = report.get("summary", "")
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            vid = conn.execute(insert(RecipeValidationRow.__table__).values(
                name=name, candidate_version=candidate[0], candidate_hash=candidate[1],
                baseline_version=None if baseline is None else baseline[0], baseline_hash=None if baseline is None else baseline[1],
                parts=parts, actor=actor, at=now, report=report).returning(VAL.id)).scalar_one()
            conn.execute(insert(AuditLogRow.__table__).values(
                actor=actor, action="recipe.validate", target=f"{name} v{candidate[0]}", at=now,
                before=None if baseline is None else f"v{baseline[0]}", after=summary[:2000] or None))
        return int(vid)

    def validations(self, name: str, limit: int = 20) -> list[Validation]:
        """The latest validations of recipe ``name``, newest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(VAL.id, VAL.name, VAL.candidate_version, VAL.candidate_hash, VAL.baseline_version,
                                       VAL.baseline_hash, VAL.parts, VAL.actor, VAL.at, VAL.report)
                                .where(VAL.name == name).order_by(VAL.at.desc(), VAL.id.desc()).limit(limit)).all()
        return [Validation(*r) for r in rows]


__all__ = ["RecipeVersions", "RecipeVersion", "Validation", "VersionExists", "text_diff"]
