"""Reviewed parts as a training manifest: images from the archive, masks from the labels.

``write_manifest`` writes ``manifest.csv`` (columns ``image, mask, class, part, inspection``)
and one mask PNG per defective view into a folder, in the format `station train` and
`station eval` read (station.vision.dataset): ``image`` is the archived raw view (absolute
path), ``mask`` the union of the label's regions on that view (255 = defect), ``class`` the
recipe's good class for a part labelled good, else the class of the label's largest region
(a manifest row has one class); ``part`` groups the views of one part, so folds never split it.
A part that cannot be used (image gone from the archive, a class the recipe does not know) is
left out with its reason.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from station.db.labels import ReviewedPart

MANIFEST_COLUMNS = ("image", "mask", "class", "part", "inspection")


@dataclass
class TrainingSet:
    manifest: Path
    rows: int = 0
    parts: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    inspections: list[int] = field(default_factory=list)  # the labelled inspections in the manifest
    left_out: list[tuple[int, str]] = field(default_factory=list)  # (inspection id, reason)


def write_manifest(parts: list[ReviewedPart], archive_dir: Path, out_dir: Path, good_class: str,
                   classes: list[str]) -> TrainingSet:
    """Write the manifest of ``parts`` (views in ``archive_dir``) into ``out_dir``; see the module doc."""
    out_dir = Path(out_dir)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    result = TrainingSet(out_dir / "manifest.csv")
    rows = []
    for part in parts:
        label = part.label
        cls = good_class if label.verdict == "pass" else label.class_name
        unknown = sorted({r.class_name for r in label.regions} - set(classes))
        if unknown:
            result.left_out.append((part.inspection_id, f"classes {unknown} are not in the recipe ({', '.join(classes)})"))
            continue
        if cls is None:
            result.left_out.append((part.inspection_id, "labelled defective without an outlined defect"))
            continue
        part_rows = []
        for view, rel in sorted(part.images.items()):
            image = Path(archive_dir) / rel
            shape = _shape(image)
            if shape is None:
                part_rows = None
                result.left_out.append((part.inspection_id, f"archived image {rel} is missing or unreadable"))
                break
            mask_rel = ""
            regions = [r for r in label.regions if r.view == view]
            if regions:
                mask = np.zeros(shape, bool)
                for r in regions:
                    mask |= r.mask(shape)
                mask_rel = f"masks/i{part.inspection_id}-{view}.png"
                cv2.imwrite(str(out_dir / mask_rel), mask.astype(np.uint8) * 255)
            part_rows.append([str(image.resolve()), mask_rel, cls, part.group, str(part.inspection_id)])
        if part_rows is None:
            continue
        rows += part_rows
        result.parts += 1
        result.inspections.append(part.inspection_id)
        result.class_counts[cls] = result.class_counts.get(cls, 0) + len(part_rows)
    with open(result.manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(MANIFEST_COLUMNS)
        w.writerows(rows)
    result.rows = len(rows)
    return result


def _shape(path: Path) -> tuple[int, int] | None:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
    return None if image is None else image.shape[:2]


__all__ = ["write_manifest", "TrainingSet", "MANIFEST_COLUMNS"]
