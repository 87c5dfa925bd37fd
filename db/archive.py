"""The image archive: PNG files under ``ArchiveConfig.dir``, one ``images`` row each.

Files are written before the row that names them is committed (temp file + rename), so
after a crash a row never points at a half-written file; a crash can leave a file with no
row, which ``reconcile`` removes once it is older than a grace period. Retention deletes
rows first, then files, for the same reason. Only this station's images are touched: on a
shared PostgreSQL other stations' rows name files on other machines.

Layout: ``YYYY/MM/DD/<station>/<HHMMSS>-s<seq>-<view>-<kind>-<token>.png`` (UTC date).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import Engine, delete, func, select

from station.db.models import ImageRow, InspectionRow
from station.db.quarantine import set_aside_before
from station.config import ArchiveConfig

log = logging.getLogger("db.archive")

TMP_SUFFIX = ".tmp"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
IMG = ImageRow.__table__.c
INSP = InspectionRow.__table__.c


def safe_name(text: str) -> str:
    """``text`` reduced to a file-name-safe token (never empty, never a path)."""
    return _UNSAFE.sub("_", text).strip("._")[:64] or "_"


@dataclass(frozen=True)
class StoredImage:
    path: str  # relative to the archive directory, '/' separated
    sha256: str
    bytes: int


class ImageArchive:
    """Writes PNGs into the archive directory. Raises OSError (e.g. ENOSPC) on failure, leaving no file."""

    def __init__(self, directory: Path, *, png_compression: int = 1, durable: bool = True):
        self.directory = Path(directory)
        self.durable = durable  # fsync each file before it is named by a committed row
        # level 1: about 3x faster than the default 3 for a few % more bytes
        self._params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]

    def relative_path(self, when: dt.datetime, station_id: str, sequence: int, view: str, kind: str) -> str:
        w = when.astimezone(dt.timezone.utc)
        name = f"{w:%H%M%S}-s{int(sequence)}-{safe_name(view)}-{safe_name(kind)}-{uuid.uuid4().hex[:10]}.png"
        return f"{w:%Y/%m/%d}/{safe_name(station_id)}/{name}"

    def encode(self, image: np.ndarray) -> bytes:
        """PNG bytes of a uint8 image: HxW (mono) or HxWx3 RGB."""
        img = np.ascontiguousarray(image)
        if img.dtype != np.uint8:
            raise ValueError(f"image dtype must be uint8, got {img.dtype}")
        if img.ndim == 3 and img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        elif img.ndim != 2:
            raise ValueError(f"image must be HxW or HxWx3, got shape {img.shape}")
        ok, buf = cv2.imencode(".png", img, self._params)
        if not ok:
            raise ValueError("PNG encoding failed")
        return buf.tobytes()

    def write(self, relative: str, data: bytes) -> StoredImage:
        target = self.directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + TMP_SUFFIX)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if self.durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return StoredImage(relative, hashlib.sha256(data).hexdigest(), len(data))

    def sync_dirs(self, relatives: list[str]) -> None:
        """fsync the folders holding these files, so their renames survive a power cut."""
        if not self.durable:
            return
        for d in {(self.directory / r).parent for r in relatives}:
            try:
                fd = os.open(d, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:  # best effort: the files themselves are already synced
                log.warning("cannot fsync archive folder %s: %s", d, exc)

    def remove(self, relative: str) -> int:
        """Delete one file; returns the bytes freed (0 if it was already gone)."""
        p = self.directory / relative
        try:
            size = p.stat().st_size
            p.unlink()
            return size
        except FileNotFoundError:
            return 0

    def walk(self) -> list[tuple[str, os.stat_result]]:
        """Every file under the archive (relative path, stat)."""
        out = []
        if not self.directory.exists():
            return out
        for root, _dirs, files in os.walk(self.directory):
            for name in files:
                p = Path(root) / name
                try:
                    out.append((p.relative_to(self.directory).as_posix(), p.stat()))
                except FileNotFoundError:
                    continue  # removed meanwhile
        return out

    def prune_empty_dirs(self) -> None:
        for root, dirs, files in os.walk(self.directory, topdown=False):
            if root != str(self.directory) and not dirs and not files:
                try:
                    os.rmdir(root)
                except OSError:
                    pass


# ---- retention ------------------------------------------------------------------------------
@dataclass
class RetentionReport:
    deleted_files: int = 0
    deleted_bytes: int = 0
    total_bytes_after: int = 0
    over_budget_young: bool = False  # over max_bytes, but what is left is younger than min_age


def archived_file(archive_dir: Path, relative: str) -> Path | None:
    """The file of an image row's ``relative`` path, or None when it would lie outside the
    archive (a row must never make the HMI or a report read another file)."""
    root = Path(archive_dir).resolve()
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) else None


def _station_images(station_id: str):
    return select(INSP.id).where(INSP.station_id == station_id)


def apply_retention(
    engine: Engine, archive: ImageArchive, config: ArchiveConfig, station_id: str, *, now: dt.datetime | None = None, batch: int = 500
) -> RetentionReport:
    """Delete this station's images older than ``retention_days``, then the oldest until the total
    is within ``max_bytes``; never an image younger than ``min_age_days``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    young = now - dt.timedelta(days=config.min_age_days)
    expired = min(now - dt.timedelta(days=config.retention_days), young)
    mine = IMG.inspection_id.in_(_station_images(station_id))
    report = RetentionReport()

    def drop(rows: list[tuple[int, str, int]]) -> None:
        with engine.begin() as conn:
            conn.execute(delete(ImageRow).where(IMG.id.in_([r[0] for r in rows])))
        for _id, path, size in rows:  # rows are gone first: a crash here leaves orphans, not dangling rows
            archive.remove(path)
            report.deleted_files += 1
            report.deleted_bytes += size

    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(IMG.id, IMG.path, IMG.bytes).where(mine, IMG.created_at < expired).order_by(IMG.created_at).limit(batch)
            ).all()
        if not rows:
            break
        drop([tuple(r) for r in rows])

    with engine.connect() as conn:
        total = int(conn.scalar(select(func.coalesce(func.sum(IMG.bytes), 0)).where(mine)))
    while total > config.max_bytes:
        with engine.connect() as conn:
            rows = conn.execute(
                select(IMG.id, IMG.path, IMG.bytes).where(mine, IMG.created_at < young).order_by(IMG.created_at, IMG.id).limit(batch)
            ).all()
        if not rows:
            report.over_budget_young = True
            break
        chosen, excess = [], total - config.max_bytes
        for r in rows:
            chosen.append(tuple(r))
            excess -= r[2]
            if excess <= 0:
                break
        drop(chosen)
        total -= sum(r[2] for r in chosen)
    report.total_bytes_after = total
    archive.prune_empty_dirs()
    return report


# ---- reconciliation -------------------------------------------------------------------------
@dataclass
class ReconcileReport:
    orphan_files_removed: list[str] = field(default_factory=list)  # files no row names
    dangling_rows_removed: list[str] = field(default_factory=list)  # rows whose file is gone
    temp_files_removed: list[str] = field(default_factory=list)  # left by a crash mid-write
    mismatched: list[str] = field(default_factory=list)  # size (or sha256 with verify) differs; kept
    kept_set_aside: list[str] = field(default_factory=list)  # no row, but older than a set-aside database: kept

    @property
    def clean(self) -> bool:
        return not (self.orphan_files_removed or self.dangling_rows_removed or self.temp_files_removed or self.mismatched)


def reconcile(
    engine: Engine,
    archive: ImageArchive,
    station_id: str,
    *,
    grace_s: float = 300.0,
    verify: bool = False,
    dry_run: bool = False,
    now_s: float | None = None,
) -> ReconcileReport:
    """Make files and rows agree, both ways, for this station.

    Files younger than ``grace_s`` are left alone: the writer writes files before committing
    their rows. So are files older than a corrupt database set aside next to this one
    (``db.quarantine``): its rows name them. ``verify`` re-hashes every file (slow).
    ``dry_run`` only reports.
    """
    import time

    now_s = time.time() if now_s is None else now_s
    report = ReconcileReport()
    kept_before_s = set_aside_before(engine)
    files = {rel: st for rel, st in archive.walk()}
    rows: dict[str, tuple[int, int, str]] = {}
    with engine.connect() as conn:
        for rid, path, size, sha in conn.execute(
            select(IMG.id, IMG.path, IMG.bytes, IMG.sha256).where(IMG.inspection_id.in_(_station_images(station_id)))
        ):
            rows[path] = (rid, size, sha)

    for rel, st in files.items():
        old = now_s - st.st_mtime > grace_s
        if rel.endswith(TMP_SUFFIX):
            if old:
                report.temp_files_removed.append(rel)
        elif rel not in rows:
            if old and kept_before_s is not None and st.st_mtime < kept_before_s:
                report.kept_set_aside.append(rel)
            elif old:
                report.orphan_files_removed.append(rel)
        else:
            _rid, size, sha = rows[rel]
            if st.st_size != size:
                report.mismatched.append(rel)
            elif verify and hashlib.sha256((archive.directory / rel).read_bytes()).hexdigest() != sha:
                report.mismatched.append(rel)
    dangling = [path for path in rows if path not in files]
    # a row can be committed after the walk started only for a file that already existed, so a
    # row with no file seen is re-checked on disk before it is removed
    dangling = [p for p in dangling if not (archive.directory / p).exists()]
    report.dangling_rows_removed = dangling
    if dry_run:
        return report
    for rel in report.temp_files_removed + report.orphan_files_removed:
        archive.remove(rel)
    if dangling:
        ids = [rows[p][0] for p in dangling]
        with engine.begin() as conn:
            for i in range(0, len(ids), 500):
                conn.execute(delete(ImageRow).where(IMG.id.in_(ids[i:i + 500])))
    for rel in report.mismatched:
        log.error("archive file %s does not match its row (size or sha256); kept for inspection", rel)
    archive.prune_empty_dirs()
    return report
