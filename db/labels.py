"""Review labels: what a quality engineer says an inspected part truly is, and the defects they
outlined on its archived views (tables ``part_labels`` and ``label_regions``); the review queue
that lists the parts to look at; the reviewed parts a recipe is retrained and validated on.

A label is stored with its audit entry in one transaction. It records who labelled the part
and when, what the station said (its verdict, the recipe version and model hashes that saw the
part) and what outlined the regions (the SAM pair). The latest label of an inspection counts;
earlier ones stay. Boxes are (x0, y0, x1, y1) px in the view's frame, x1/y1 exclusive; masks
are ``db.rle`` text within their box. Times are aware UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, and_, exists, func, insert, select

from station.db import rle
from station.db.engine import WRITE
from station.db.filters import LABEL
from station.db.models import (
    LABEL_VERDICTS,
    REGION_SOURCES,
    AuditLogRow,
    ImageRow,
    InspectionRow,
    LabelRegionRow,
    PartLabelRow,
    ReviewRow,
    utcnow,
)

I = InspectionRow.__table__.c  # noqa: E741 (as in db.queries)
IMG = ImageRow.__table__.c
L = PartLabelRow.__table__.c
R = LabelRegionRow.__table__.c
RV = ReviewRow.__table__.c

MAX_REGIONS = 200
MAX_COMMENT = 1000
QUEUE_VERDICTS = ("review", "reject", "pass")
QUEUE_STATUSES = ("all", "unlabelled", "labelled", "flagged")


class LabelError(ValueError):
    """A label the store refuses (unknown inspection, bad verdict, box or class name); says why."""


@dataclass(frozen=True)
class Region:
    """A defect to store: its view, class, box and (optionally) its mask, bool HxW in the view frame."""

    view: str
    class_name: str
    box: tuple[int, int, int, int]
    mask: np.ndarray | None = None
    source: str = "sam"


@dataclass(frozen=True)
class StoredRegion:
    view: str
    class_name: str
    box: tuple[int, int, int, int]
    mask_rle: str | None
    source: str

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The region as a bool mask of ``shape`` (H, W) px: its RLE mask, or its box when it has none."""
        if self.mask_rle:
            return rle.paste(self.mask_rle, self.box, shape)
        out = np.zeros(shape, bool)
        x0, y0, x1, y1 = self.box
        out[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
        return out


@dataclass(frozen=True)
class PartLabel:
    id: int
    inspection_id: int
    verdict: str  # "pass" (good) | "reject" (defective)
    station_outcome: str
    reviewer: str
    at: dt.datetime
    comment: str
    recipe_name: str
    recipe_version: int
    recipe_hash: str
    model_hashes: dict[str, Any]
    sam_model: str
    regions: list[StoredRegion] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        """Whether the label confirms the station's verdict (a REVIEW verdict is never confirmed:
        the person decided what the station could not)."""
        return self.verdict == self.station_outcome

    @property
    def class_name(self) -> str | None:
        """The part's defect class for a one-class training manifest: that of its largest region."""
        if not self.regions:
            return None
        return max(self.regions, key=lambda r: (r.box[2] - r.box[0]) * (r.box[3] - r.box[1])).class_name


@dataclass(frozen=True)
class QueueItem:
    """One part in the review queue (an inspection with an archived raw view)."""

    inspection_id: int
    triggered_at: dt.datetime
    part_id: int
    station_id: str
    recipe_name: str
    recipe_version: int
    outcome: str
    reason: str
    top_class: str | None
    flagged_by: str | None
    label: PartLabel | None


@dataclass(frozen=True)
class ReviewedPart:
    """A labelled part for training or validation: its raw views (archive paths) and its latest label."""

    inspection_id: int
    part_id: int
    station_id: str
    triggered_at: dt.datetime
    images: dict[str, str]  # view -> path relative to the archive directory
    label: PartLabel

    @property
    def group(self) -> str:
        """The part (the views of one part stay together in grouped splits)."""
        return f"{self.station_id}:{self.part_id}"


def _check_region(r: Region) -> None:
    if r.source not in REGION_SOURCES:
        raise LabelError(f"region source must be one of {', '.join(REGION_SOURCES)}, got {r.source!r}")
    if not LABEL.fullmatch(r.class_name or "") or not LABEL.fullmatch(r.view or ""):
        raise LabelError(f"region class {r.class_name!r} / view {r.view!r}: letters, digits, space, . _ - only")
    x0, y0, x1, y1 = (int(v) for v in r.box)
    if min(x0, y0) < 0 or x1 <= x0 or y1 <= y0:
        raise LabelError(f"region box {r.box}: must be (x0, y0, x1, y1) px with 0 <= x0 < x1 and 0 <= y0 < y1")
    if r.mask is not None and (r.mask.ndim != 2 or r.mask.shape[0] < y1 or r.mask.shape[1] < x1):
        raise LabelError(f"region mask of shape {r.mask.shape} does not hold its box {r.box}")


def _summary(verdict: str, regions) -> str:
    return json.dumps({"verdict": verdict, "regions": [[r.class_name, list(r.box), r.source] for r in regions]})


class LabelStore:
    """Labels and the review queue on one history database. Thread-safe (a connection per call)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # ---- writing --------------------------------------------------------------------------
    def save(self, inspection_id: int, verdict: str, regions: list[Region], reviewer: str, *, comment: str = "",
             sam_model: str = "") -> PartLabel:
        """Store a label of inspection ``inspection_id`` and its audit entry. A defective part
        ("reject") needs at least one region; a good part ("pass") has none. Raises LabelError."""
        if verdict not in LABEL_VERDICTS:
            raise LabelError(f"verdict must be one of {', '.join(LABEL_VERDICTS)}, got {verdict!r}")
        if verdict == "reject" and not regions:
            raise LabelError("a defective part needs at least one outlined defect (draw a box around it)")
        if verdict == "pass" and regions:
            raise LabelError("a good part has no defects: delete the regions or label the part defective")
        if len(regions) > MAX_REGIONS:
            raise LabelError(f"at most {MAX_REGIONS} regions per part")
        if len(comment) > MAX_COMMENT:
            raise LabelError(f"comment: at most {MAX_COMMENT} characters")
        for r in regions:
            _check_region(r)
        with self.engine.connect() as conn:  # read first: the write transaction below only inserts
            row = conn.execute(select(I.outcome, I.recipe_name, I.recipe_version, I.recipe_hash, I.model_hashes)
                               .where(I.id == inspection_id)).first()
        if row is None:
            raise LabelError(f"no inspection {inspection_id}")
        before = self.latest(inspection_id)
        now = utcnow()
        values = {"inspection_id": inspection_id, "verdict": verdict, "station_outcome": row.outcome, "reviewer": reviewer,
                  "at": now, "comment": comment, "recipe_name": row.recipe_name, "recipe_version": row.recipe_version,
                  "recipe_hash": row.recipe_hash or "", "model_hashes": row.model_hashes or {}, "sam_model": sam_model[:128]}
        region_rows = []
        for r in regions:
            box = tuple(int(v) for v in r.box)
            region_rows.append({"view": r.view, "class_name": r.class_name, "x0": box[0], "y0": box[1], "x1": box[2],
                                "y1": box[3], "mask_rle": None if r.mask is None else rle.encode(r.mask, box), "source": r.source})
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            label_id = conn.execute(insert(PartLabelRow.__table__).values(**values).returning(L.id)).scalar_one()
            if region_rows:
                conn.execute(insert(LabelRegionRow.__table__), [dict(r, label_id=label_id) for r in region_rows])
            conn.execute(insert(AuditLogRow.__table__).values(
                actor=reviewer, action="label.save", target=f"inspection {inspection_id}", at=now,
                before=None if before is None else _summary(before.verdict, before.regions),
                after=_summary(verdict, regions)))
        return self.latest(inspection_id)

    def flag(self, inspection_id: int, who: str, comment: str = "") -> None:
        """An operator asks a quality engineer to look at a part (a ``reviews`` row "flagged", audited)."""
        if len(comment) > MAX_COMMENT:
            raise LabelError(f"comment: at most {MAX_COMMENT} characters")
        with self.engine.connect() as conn:
            if conn.scalar(select(I.id).where(I.id == inspection_id)) is None:
                raise LabelError(f"no inspection {inspection_id}")
        now = utcnow()
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            conn.execute(insert(ReviewRow.__table__).values(inspection_id=inspection_id, label="flagged", comment=comment,
                                                            reviewer=who, at=now))
            conn.execute(insert(AuditLogRow.__table__).values(actor=who, action="review.flag", target=f"inspection {inspection_id}",
                                                              at=now, after=comment or None))

    # ---- reading --------------------------------------------------------------------------
    def latest(self, inspection_id: int) -> PartLabel | None:
        return self._latest([inspection_id]).get(inspection_id)

    def _latest(self, ids: list[int]) -> dict[int, PartLabel]:
        """The latest label of each of ``ids`` that has one, with its regions."""
        if not ids:
            return {}
        out: dict[int, PartLabel] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                newest = select(func.max(L.id)).where(L.inspection_id.in_(chunk)).group_by(L.inspection_id)
                labels = [dict(r._mapping) for r in conn.execute(select(PartLabelRow.__table__).where(L.id.in_(newest)))]
                regions: dict[int, list[StoredRegion]] = {lab["id"]: [] for lab in labels}
                if labels:
                    for r in conn.execute(select(R.label_id, R.view, R.class_name, R.x0, R.y0, R.x1, R.y1, R.mask_rle, R.source)
                                          .where(R.label_id.in_(list(regions))).order_by(R.id)):
                        regions[r.label_id].append(StoredRegion(r.view, r.class_name, (r.x0, r.y0, r.x1, r.y1), r.mask_rle, r.source))
                for lab in labels:
                    out[lab["inspection_id"]] = PartLabel(
                        lab["id"], lab["inspection_id"], lab["verdict"], lab["station_outcome"], lab["reviewer"], lab["at"],
                        lab["comment"], lab["recipe_name"], lab["recipe_version"], lab["recipe_hash"], lab["model_hashes"] or {},
                        lab["sam_model"], regions[lab["id"]])
        return out

    def _flags(self, conn, ids: list[int]) -> dict[int, str]:
        if not ids:
            return {}
        rows = conn.execute(select(RV.inspection_id, RV.reviewer).where(RV.inspection_id.in_(ids), RV.label == "flagged")
                            .order_by(RV.id))
        return {r.inspection_id: r.reviewer for r in rows}

    def queue(self, *, verdicts: tuple[str, ...] = QUEUE_VERDICTS, status: str = "all", recipe: str | None = None,
              limit: int = 50, offset: int = 0) -> tuple[list[QueueItem], int]:
        """Parts with an archived raw view, newest first, and how many match: verdicts among
        ``verdicts``; ``status`` "unlabelled", "labelled", "flagged" (by an operator, not yet
        labelled) or "all". Raises LabelError for an unknown verdict or status."""
        bad = [v for v in verdicts if v not in QUEUE_VERDICTS]
        if bad or not verdicts:
            raise LabelError(f"verdicts: some of {', '.join(QUEUE_VERDICTS)} (got {list(verdicts)})")
        if status not in QUEUE_STATUSES:
            raise LabelError(f"status: one of {', '.join(QUEUE_STATUSES)} (got {status!r})")
        if not 1 <= limit <= 1000 or offset < 0:
            raise LabelError("limit 1..1000, offset >= 0")
        labelled = exists().where(L.inspection_id == I.id)
        conds = [exists().where(IMG.inspection_id == I.id, IMG.kind == "raw"), I.outcome.in_(list(verdicts))]
        if recipe is not None:
            conds.append(I.recipe_name == recipe)
        if status == "labelled":
            conds.append(labelled)
        elif status == "unlabelled":
            conds.append(~labelled)
        elif status == "flagged":
            conds.append(and_(exists().where(RV.inspection_id == I.id, RV.label == "flagged"), ~labelled))
        cols = (I.id, I.triggered_at, I.part_id, I.station_id, I.recipe_name, I.recipe_version, I.outcome, I.reason, I.top_class)
        with self.engine.connect() as conn:
            total = int(conn.scalar(select(func.count()).select_from(InspectionRow).where(*conds)))
            rows = conn.execute(select(*cols).where(*conds).order_by(I.triggered_at.desc(), I.id.desc())
                                .limit(limit).offset(offset)).all()
            flags = self._flags(conn, [r.id for r in rows])
        labels = self._latest([r.id for r in rows])
        return [QueueItem(r.id, r.triggered_at, r.part_id, r.station_id, r.recipe_name, r.recipe_version, r.outcome, r.reason,
                          r.top_class, flags.get(r.id), labels.get(r.id)) for r in rows], total

    def reviewed_parts(self, recipe: str, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
                       station_id: str | None = None) -> list[ReviewedPart]:
        """Every part of ``recipe`` with a label and archived raw views, oldest first (times: when
        the part was inspected, ``until`` exclusive)."""
        conds = [I.recipe_name == recipe, exists().where(L.inspection_id == I.id)]
        if since is not None:
            conds.append(I.triggered_at >= since)
        if until is not None:
            conds.append(I.triggered_at < until)
        if station_id is not None:
            conds.append(I.station_id == station_id)
        with self.engine.connect() as conn:
            rows = conn.execute(select(I.id, I.part_id, I.station_id, I.triggered_at).where(*conds)
                                .order_by(I.triggered_at, I.id)).all()
            images: dict[int, dict[str, str]] = {r.id: {} for r in rows}
            ids = list(images)
            for start in range(0, len(ids), 500):
                for img in conn.execute(select(IMG.inspection_id, IMG.view, IMG.path)
                                        .where(IMG.inspection_id.in_(ids[start:start + 500]), IMG.kind == "raw")
                                        .order_by(IMG.id)):
                    images[img.inspection_id].setdefault(img.view, img.path)
        labels = self._latest(ids)
        return [ReviewedPart(r.id, r.part_id, r.station_id, r.triggered_at, images[r.id], labels[r.id])
                for r in rows if images[r.id] and r.id in labels]


__all__ = ["LabelStore", "LabelError", "Region", "StoredRegion", "PartLabel", "QueueItem", "ReviewedPart",
           "QUEUE_VERDICTS", "QUEUE_STATUSES"]
