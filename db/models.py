"""The history schema (SQLAlchemy 2). The same tables run on SQLite and PostgreSQL.

Times are stored as UTC (``UtcDateTime``: timezone-aware in Python, naive UTC in the
database so SQLite compares them as text in time order). Boxes are (x0, y0, x1, y1) px in
the view's frame, x1/y1 exclusive. Masks are run-length encoded (see ``db.rle``) within
their box. Image paths are relative to the archive directory.

Any change here needs a migration in ``db/migrations/versions`` (a test compares them).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite only auto-increments INTEGER PRIMARY KEY; BIGINT elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out; stored as naive UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give a timezone (UTC is stored)")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.timezone.utc)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, dt.datetime: UtcDateTime}


class InspectionRow(Base):
    """One triggered part and its verdict. Written with its defects and images in one transaction."""

    __tablename__ = "inspections"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    station_id: Mapped[str] = mapped_column(String(64))
    sequence: Mapped[int] = mapped_column(BigInteger)  # pipeline sequence; restarts with the station
    part_id: Mapped[int] = mapped_column(BigInteger)
    triggered_at: Mapped[dt.datetime]
    cameras: Mapped[str] = mapped_column(String(255), default="")  # view camera names, comma-separated
    recipe_name: Mapped[str] = mapped_column(String(64))
    recipe_version: Mapped[int] = mapped_column(Integer)
    recipe_hash: Mapped[str] = mapped_column(String(64), default="")
    model_hashes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    outcome: Mapped[str] = mapped_column(String(8))  # "pass" | "reject" | "review"
    reason: Mapped[str] = mapped_column(Text, default="")
    reject_reason: Mapped[str | None] = mapped_column(String(32))  # RejectReason value, None on pass
    plc_code: Mapped[int] = mapped_column(Integer, default=0)
    top_class: Mapped[str | None] = mapped_column(String(64))
    defect_count: Mapped[int] = mapped_column(Integer, default=0)
    scores: Mapped[dict[str, Any]] = mapped_column(default=dict)  # raw scores from the vision stage
    thresholds: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the recipe's class thresholds
    timings_ms: Mapped[dict[str, Any]] = mapped_column(default=dict)  # per stage, plus "total"
    error: Mapped[str | None] = mapped_column(Text)
    images_dropped: Mapped[int] = mapped_column(Integer, default=0)  # wanted by policy, not saved

    defects: Mapped[list["DefectRow"]] = relationship(
        back_populates="inspection", cascade="all, delete-orphan", passive_deletes=True, order_by="DefectRow.id"
    )
    images: Mapped[list["ImageRow"]] = relationship(
        back_populates="inspection", cascade="all, delete-orphan", passive_deletes=True, order_by="ImageRow.id"
    )
    reviews: Mapped[list["ReviewRow"]] = relationship(
        back_populates="inspection", cascade="all, delete-orphan", passive_deletes=True, order_by="ReviewRow.id"
    )
    labels: Mapped[list["PartLabelRow"]] = relationship(
        back_populates="inspection", cascade="all, delete-orphan", passive_deletes=True, order_by="PartLabelRow.id"
    )

    __table_args__ = (
        Index("ix_inspections_time_outcome", "triggered_at", "outcome"),  # covers yield queries
        Index("ix_inspections_recipe_time", "recipe_name", "triggered_at"),
        Index("ix_inspections_outcome_time", "outcome", "triggered_at"),
        Index("ix_inspections_station_time", "station_id", "triggered_at"),
        Index("ix_inspections_part_id", "part_id"),
    )


class DefectRow(Base):
    """A defect found on one view. ``triggered_at`` repeats the inspection's, for fast Pareto."""

    __tablename__ = "defects"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    inspection_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("inspections.id", ondelete="CASCADE"))
    triggered_at: Mapped[dt.datetime]
    view: Mapped[str] = mapped_column(String(64))
    class_name: Mapped[str] = mapped_column(String(64))
    confidence: Mapped[float] = mapped_column(Float)
    x0: Mapped[int] = mapped_column(Integer)
    y0: Mapped[int] = mapped_column(Integer)
    x1: Mapped[int] = mapped_column(Integer)
    y1: Mapped[int] = mapped_column(Integer)
    area_px: Mapped[int] = mapped_column(Integer)
    area_mm2: Mapped[float | None] = mapped_column(Float)
    proposal_score: Mapped[float] = mapped_column(Float, default=0.0)
    zone: Mapped[str | None] = mapped_column(String(64))
    mask_rle: Mapped[str | None] = mapped_column(Text)  # db.rle encoding, within the box

    inspection: Mapped[InspectionRow] = relationship(back_populates="defects")

    __table_args__ = (
        Index("ix_defects_inspection_id", "inspection_id"),
        Index("ix_defects_class_time", "class_name", "triggered_at"),
        Index("ix_defects_time_class", "triggered_at", "class_name"),
    )

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)


class ImageRow(Base):
    """An archived PNG: the raw view or the overlay shown to the operator."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    inspection_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("inspections.id", ondelete="CASCADE"))
    view: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # "raw" | "overlay"
    path: Mapped[str] = mapped_column(String(512), unique=True)  # relative to the archive directory
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime]

    inspection: Mapped[InspectionRow] = relationship(back_populates="images")

    __table_args__ = (
        Index("ix_images_inspection_id", "inspection_id"),
        Index("ix_images_created_at", "created_at"),
    )


class RecipeVersionRow(Base):
    """The exact content of every recipe version the station ran."""

    __tablename__ = "recipe_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    content: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("name", "content_hash"), Index("ix_recipe_versions_name", "name"))


class AuditLogRow(Base):
    """Who changed what, when, with the state before and after (JSON text or plain text)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))  # e.g. "recipe.activate", "user.create"
    target: Mapped[str] = mapped_column(String(255), default="")
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_audit_log_at", "at"),)


class UserRow(Base):
    """An HMI user. ``password_hash`` is an argon2 hash (hmi/auth.py); never a password."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # "operator" | "engineer" | "admin"
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None]
    last_login_at: Mapped[dt.datetime | None]
    password_changed_at: Mapped[dt.datetime | None]


class ReviewRow(Base):
    """A judgement of a verdict: ``label`` "confirmed" or "wrong" (a quality engineer), or
    "flagged" (an operator asks a quality engineer to look at the part)."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    inspection_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("inspections.id", ondelete="CASCADE"))
    defect_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("defects.id", ondelete="SET NULL"))
    label: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")
    reviewer: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    inspection: Mapped[InspectionRow] = relationship(back_populates="reviews")

    __table_args__ = (Index("ix_reviews_inspection_id", "inspection_id"),)


class PartLabelRow(Base):
    """A quality engineer's label of one inspected part: what the part truly is (``verdict``
    "pass" good, "reject" defective) and the defects outlined on its archived views
    (``LabelRegionRow``). It records what saw the part (the recipe version and model hashes
    that gave ``station_outcome``) and what outlined the regions (``sam_model``). The latest
    label of an inspection counts (training, validation); earlier ones stay, as the audit log."""

    __tablename__ = "part_labels"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    inspection_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("inspections.id", ondelete="CASCADE"))
    verdict: Mapped[str] = mapped_column(String(8))  # the reviewer's: "pass" | "reject"
    station_outcome: Mapped[str] = mapped_column(String(8))  # the station's verdict it confirms or overrides
    reviewer: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    comment: Mapped[str] = mapped_column(Text, default="")
    recipe_name: Mapped[str] = mapped_column(String(64))
    recipe_version: Mapped[int] = mapped_column(Integer)
    recipe_hash: Mapped[str] = mapped_column(String(64), default="")
    model_hashes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    sam_model: Mapped[str] = mapped_column(String(128), default="")  # "name sha256-prefix" of the outlining pair

    inspection: Mapped[InspectionRow] = relationship(back_populates="labels")
    regions: Mapped[list["LabelRegionRow"]] = relationship(
        back_populates="label", cascade="all, delete-orphan", passive_deletes=True, order_by="LabelRegionRow.id"
    )

    __table_args__ = (Index("ix_part_labels_inspection_id", "inspection_id"), Index("ix_part_labels_at", "at"))


class LabelRegionRow(Base):
    """One defect a reviewer outlined (or kept from the station's findings) on a view of the part.
    Box (x0, y0, x1, y1) px in the view's frame; the mask as ``db.rle`` text within the box."""

    __tablename__ = "label_regions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    label_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("part_labels.id", ondelete="CASCADE"))
    view: Mapped[str] = mapped_column(String(64))
    class_name: Mapped[str] = mapped_column(String(64))
    x0: Mapped[int] = mapped_column(Integer)
    y0: Mapped[int] = mapped_column(Integer)
    x1: Mapped[int] = mapped_column(Integer)
    y1: Mapped[int] = mapped_column(Integer)
    mask_rle: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))  # "sam" (outlined), "box" (the box itself), "station" (kept)

    label: Mapped[PartLabelRow] = relationship(back_populates="regions")

    __table_args__ = (Index("ix_label_regions_label_id", "label_id"),)


class RecipeValidationRow(Base):
    """A candidate recipe version replayed on reviewed parts side by side with the version it
    would replace (`station eval --recipe NAME@VERSION --from-history`, or the HMI's recipe page):
    detection, false reject, escape and review rates, confusion by class, latency (``report``)."""

    __tablename__ = "recipe_validations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    candidate_version: Mapped[int] = mapped_column(Integer)
    candidate_hash: Mapped[str] = mapped_column(String(64))
    baseline_version: Mapped[int | None] = mapped_column(Integer)
    baseline_hash: Mapped[str | None] = mapped_column(String(64))
    parts: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_recipe_validations_name_at", "name", "at"),)


OUTCOMES = ("pass", "reject", "review")
IMAGE_KINDS = ("raw", "overlay")
ROLES = ("operator", "engineer", "admin")
REVIEW_LABELS = ("confirmed", "wrong", "flagged")
LABEL_VERDICTS = ("pass", "reject")
REGION_SOURCES = ("sam", "box", "station")
