"""Manifest CSVs of labelled images, for `station train` and `station eval` (no torch here).

Columns: ``image`` (path relative to the manifest), ``mask`` (optional; same size as the image,
>= 128 is defect), ``class`` (a defect class or the recipe's good class); extra columns kept.
A row that cannot be used (unreadable, truncated or corrupt image, too many pixels, wrong bit
depth, image smaller than the model input, mask size mismatch) becomes a ``SkippedRow`` with its reason; the rest continue.
"""

from __future__ import annotations

import csv
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from station.images import DEFAULT_MAX_PIXELS, read_image_file


class ManifestError(ValueError):
    """The manifest as a whole is unusable (missing, no 'image' column, no rows)."""


@dataclass(frozen=True)
class Row:
    index: int  # 1-based data row number (header is row 0)
    image: Path
    mask: Path | None
    label: str
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    row: Row
    image: np.ndarray  # uint8 HxW (grey) or HxWx3 RGB
    mask: np.ndarray | None  # bool HxW


@dataclass(frozen=True)
class SkippedRow:
    row: Row
    reason: str


def read_manifest(path: Path | str) -> list[Row]:
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            if "image" not in fields:
                raise ManifestError(f"{path}: manifest needs an 'image' column (has {fields})")
            rows = []
            for i, r in enumerate(reader, 1):
                mask = (r.get("mask") or "").strip()
                extra = {k: (v or "").strip() for k, v in r.items() if k not in ("image", "mask", "class") and k}
                rows.append(Row(i, path.parent / (r["image"] or "").strip(), path.parent / mask if mask else None,
                                (r.get("class") or "").strip(), extra))
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc}") from None
    if not rows:
        raise ManifestError(f"{path}: manifest has no rows")
    return rows


def load_sample(row: Row, min_side_px: int = 16, max_pixels: int = DEFAULT_MAX_PIXELS) -> Sample:
    """Read a row's image (station.images: truncated, corrupt, 16-bit or oversized files are
    refused) and mask. Raises ValueError with the reason the row is unusable."""
    image = read_image_file(row.image, max_pixels=max_pixels, wide="refuse")
    if min(image.shape[:2]) < min_side_px:
        raise ValueError(f"image {row.image} is {image.shape[1]}x{image.shape[0]} px, smaller than the {min_side_px} px minimum")
    mask = None
    if row.mask is not None:
        m = cv2.imread(str(row.mask), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise ValueError(f"mask {row.mask} is missing or unreadable")
        if m.shape != image.shape[:2]:
            raise ValueError(f"mask {row.mask} is {m.shape[1]}x{m.shape[0]} px, its image {image.shape[1]}x{image.shape[0]} px")
        mask = m >= 128
    return Sample(row, image, mask)


def load_samples(rows: list[Row], min_side_px: int = 16) -> tuple[list[Sample], list[SkippedRow]]:
    samples, skipped = [], []
    for row in rows:
        try:
            samples.append(load_sample(row, min_side_px))
        except ValueError as exc:
            skipped.append(SkippedRow(row, str(exc)))
    return samples, skipped


def skip_summary(skipped: list[SkippedRow]) -> dict[str, int]:
    """Counts of skipped rows by kind of reason (the words before the path details)."""
    def kind(reason: str) -> str:
        for key in ("not found", "unreadable", "truncated", "corrupt", "bit depth", "more than the limit", "smaller than",
                    "mask", "class"):
            if key in reason:
                return {"smaller than": "too small", "more than the limit": "too many pixels"}.get(key, key)
        return "other"
    return dict(Counter(kind(s.reason) for s in skipped))


def group_of(row: Row, group_by: str | None) -> str:
    if not group_by:
        return f"row{row.index}"
    if group_by not in row.extra:
        raise ManifestError(f"manifest has no column {group_by!r} to group by (has {sorted(row.extra)})")
    return row.extra[group_by] or f"row{row.index}"


def grouped_folds(rows: list[Row], k: int, group_by: str | None, seed: int = 0) -> list[list[int]]:
    """k folds of row positions; rows of one group share a fold; classes spread evenly (greedy).

    Groups are assigned largest first, by their majority class, to the fold holding the fewest
    rows of that class so far.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[group_of(r, group_by)].append(i)
    items = list(groups.items())
    random.Random(seed).shuffle(items)
    items.sort(key=lambda kv: -len(kv[1]))
    per_class = [Counter() for _ in range(k)]
    folds: list[list[int]] = [[] for _ in range(k)]
    for _, idx in items:
        cls = Counter(rows[i].label for i in idx).most_common(1)[0][0]
        f = min(range(k), key=lambda j: (per_class[j][cls], len(folds[j])))
        folds[f].extend(idx)
        per_class[f][cls] += len(idx)
    return folds
